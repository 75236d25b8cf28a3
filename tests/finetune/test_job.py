"""The fine-tuning job: classify (echo view), seeds, few-shot fractions, resume, results and report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sonofm.config import resolve_config
from sonofm.errors import UserError
from sonofm.finetune.classify import balanced_accuracy, macro_auc
from sonofm.finetune.job import FinetuneConfig, finetune, plan_splits
from sonofm.finetune.tasks import FINETUNE_TASKS, collate, get_task, load_builtin_tasks
from sonofm.stats.patients import MIN_PATIENTS
from tests.finetune.conftest import TINY_OVERRIDES


def _config(data, *extra: str) -> FinetuneConfig:
    return resolve_config(
        FinetuneConfig,
        preset="tiny",
        kind="finetune",
        values={"data": {"path": str(data)}},
        overrides=[*TINY_OVERRIDES, "train.progress=false", "train.batch_size=8", *extra],
    )


def test_classify_view_job_two_seeds_fraction_and_resume(heart_data, tmp_path) -> None:
    from sonofm.data.manifest import read_manifest
    from sonofm.models import load_model

    cfg = _config(
        heart_data,
        "task=classify",
        "task_options.target=view",
        "task_options.dim=16",
        "adapter=lora",
        "seeds=[1,2]",
        "data.fraction=0.5",
        "train.epochs=1",
    )
    out = tmp_path / "run"
    result = finetune(cfg, out, n_boot=100)
    s = result.summary
    assert s["seeds"] == [1, 2] and s["primary_metric"] == "acc"
    accs = [r["test"]["acc"] for r in s["per_seed"]]
    # seeds pooled per patient (#17): the seed mean with a patient-level CI, not mean +- std
    acc = s["test"]["acc"]
    assert acc["mean"] == pytest.approx(np.mean(accs)) and "std" not in acc
    k = s["per_seed"][0]["n_patients"]["test"]
    assert acc["n_patients"] == k and acc["n_seeds"] == 2
    if k >= MIN_PATIENTS:
        assert acc["ci_low"] <= acc["mean"] <= acc["ci_high"]
    else:
        assert acc["ci_low"] is None and "no CI" in acc["note"]
    saved = json.loads((out / "results.json").read_text())
    assert saved["test"]["acc"]["values"] == accs
    assert isinstance(saved["missing_classes"], list)
    assert all(isinstance(r["missing_train_classes"], list) for r in saved["per_seed"])
    assert all((out / f"seed-{r['seed']}" / "test_predictions.npz").is_file() for r in s["per_seed"])

    # half of the training patients, the same draw plan_splits makes for that seed
    df = read_manifest(heart_data)
    task = get_task("classify", target="view")
    for r in s["per_seed"]:
        splits = plan_splits(task, df, cfg, r["seed"])
        assert r["n_patients"]["train"] == splits["train"]["patient_id"].nunique()
        assert r["n_images"]["train"] == len(splits["train"])
    full = plan_splits(task, df, _config(heart_data, "task=classify", "task_options.target=view"), 1)
    assert s["per_seed"][0]["n_patients"]["train"] < full["train"]["patient_id"].nunique()

    html = (out / "report.html").read_text()
    assert "confusion matrix" in html and "95% CI over test patients" in html and "&plusmn;" not in html
    model = load_model(out / "seed-2" / "model")
    classes = model.config.task_options["classes"]
    assert set(classes) <= {"A4C", "A2C", "A3C", "PLAX", "PSAX_MV", "PSAX_PM", "PSAX_AP", "SC4C"}
    with torch.no_grad():
        assert model(torch.rand(2, 1, 32, 32)).shape == (2, len(classes))

    # resume: finished seeds are kept as they are (not retrained)
    stamp = (out / "seed-1" / "model" / "model.safetensors").stat().st_mtime_ns
    again = finetune(cfg, out, resume=True, n_boot=100)
    assert (out / "seed-1" / "model" / "model.safetensors").stat().st_mtime_ns == stamp
    assert again.summary["test"]["acc"] == s["test"]["acc"]


def test_classification_metrics_by_hand() -> None:
    y = np.array([0, 0, 1, 1, 2, -1])  # -1: a label the model does not know -> an error
    probs = np.array(
        [[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.3, 0.6, 0.1], [0.1, 0.2, 0.7], [0.5, 0.4, 0.1]]
    )
    task = get_task("classify", classes=["a", "b", "c"])
    m = task.metrics({"label": y, "probs": probs}, None)
    assert m["acc"] == pytest.approx(4 / 6)
    assert balanced_accuracy(y, probs) == pytest.approx((0.5 + 1.0 + 1.0) / 3)
    # one-vs-rest AUC by pair counting: class 0: positives {0.8, 0.2} vs {0.1, 0.3, 0.1, 0.5} -> 6/8;
    # class 1: {0.8, 0.6} vs {0.1, 0.7, 0.2, 0.4} -> 7/8; class 2: {0.7} vs five 0.1 -> 1
    assert macro_auc(y, probs) == pytest.approx((6 / 8 + 7 / 8 + 1.0) / 3)
    assert m["auc"] == pytest.approx((6 / 8 + 7 / 8 + 1.0) / 3)


def test_registry_collate_and_bad_requests(breast_data, tmp_path) -> None:
    load_builtin_tasks()
    assert {"segment", "classify"} <= set(FINETUNE_TASKS)
    with pytest.raises(UserError, match="valid tasks"):
        get_task("depth")
    with pytest.raises(UserError, match="unknown options"):
        get_task("classify", targt="view")
    with pytest.raises(UserError, match="labels"):
        get_task("segment", labels=[0])
    batch = collate(
        [
            {"image": torch.zeros(1, 4, 4), "label": 2, "w": 0.5, "flag": True, "id": "a"},
            None,
            {"image": torch.ones(1, 4, 4), "label": 0, "w": 1.5, "flag": False, "id": "b"},
        ]
    )
    assert batch["n_skipped"] == 1 and batch["image"].shape == (2, 1, 4, 4)
    assert batch["label"].dtype == torch.long and batch["w"].dtype == torch.float32
    assert batch["flag"].tolist() == [True, False] and batch["id"] == ["a", "b"]
    with pytest.raises(UserError, match="no such dataset"):
        finetune(_config(tmp_path / "missing"), tmp_path / "x")
    with pytest.raises(UserError, match="adapter"):
        finetune(_config(breast_data, "adapter=prompt", "train.epochs=1"), tmp_path / "y")
    with pytest.raises(UserError, match="not a sonofm model dir"):
        finetune(_config(breast_data, f"model={tmp_path}"), tmp_path / "z")
