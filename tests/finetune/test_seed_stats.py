"""Fine-tuning seeds are summarised per patient (#17): pooled test predictions, a patient-level CI
with its patient count, no CI below MIN_PATIENTS, and the classes the test split lacks.

Constructed predictions only (no training): each case is checked against a hand computation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sonofm.finetune.job import (
    FinetuneConfig,
    format_ci,
    load_seed_samples,
    missing_test_classes,
    save_predictions,
    summarise,
)
from sonofm.finetune.tasks import get_task
from sonofm.stats.patients import MIN_PATIENTS


def _onehot(pred: list[int], width: int) -> np.ndarray:
    probs = np.full((len(pred), width), 0.1 / max(width - 1, 1))
    probs[np.arange(len(pred)), pred] = 0.9
    return probs


def _seed(task_classes: list[str], labels: list[int], pred: list[int], patients: list[str]):
    """(per-seed result, samples) as the job builds them, from constructed predictions."""
    task = get_task("classify", target="view", classes=task_classes)
    preds = {"label": np.array(labels), "probs": _onehot(pred, len(task_classes))}
    rows = pd.DataFrame({"patient_id": patients})
    result = {"test": task.metrics(preds, rows), "n_patients": {"test": len(set(patients))}}
    fns = task.metric_fns(preds, rows)
    samples = {name: (fn, arrays, np.asarray(patients)) for name, (fn, arrays, _) in fns.items()}
    return result, samples


def test_single_patient_split_claims_no_ci():
    """The demo's echo test split was one patient; the old summary printed mean +- std over seeds
    as if it measured something beyond that one exam."""
    pats = ["p0"] * 6
    a = _seed(["A4C", "A2C"], [0, 0, 1, 1, 0, 1], [0, 1, 1, 1, 0, 0], pats)
    b = _seed(["A4C", "A2C"], [0, 0, 1, 1, 0, 1], [0, 0, 1, 1, 0, 0], pats)
    s = summarise([a[0], b[0]], "test", [a[1], b[1]], n_boot=100)["acc"]
    assert s["mean"] == pytest.approx((4 / 6 + 5 / 6) / 2)
    assert s["ci_low"] is None and s["ci_high"] is None
    assert s["n_patients"] == 1 and s["n_seeds"] == 2 and "no CI" in s["note"]
    assert "std" not in s
    text = format_ci(s)
    assert "[" not in text and "1 test patient," in text and "no CI" in text


def test_pooled_seeds_match_a_hand_computation():
    """12 patients, 2 rows each; every patient has one right and one wrong row in each seed, so
    every patient resample has accuracy exactly 1/2: the CI is [0.5, 0.5] by hand. Seed 2 knows a
    third class (its own class list): the seeds still pool."""
    pats = [f"p{i // 2}" for i in range(24)]
    labels = [i % 2 for i in range(24)]
    right_then_wrong = [y if i % 2 == 0 else 1 - y for i, y in enumerate(labels)]
    wrong_then_right = [1 - y if i % 2 == 0 else y for i, y in enumerate(labels)]
    a = _seed(["A4C", "A2C"], labels, right_then_wrong, pats)
    b = _seed(["A4C", "A2C", "PLAX"], labels, wrong_then_right, pats)
    s = summarise([a[0], b[0]], "test", [a[1], b[1]], n_boot=200)
    acc = s["acc"]
    assert acc["values"] == [0.5, 0.5] and acc["mean"] == pytest.approx(0.5)
    assert acc["ci_low"] == pytest.approx(0.5) and acc["ci_high"] == pytest.approx(0.5)
    assert acc["n_patients"] == 12 >= MIN_PATIENTS  # patients, not rows x seeds (48)
    assert acc["n_rows"] == 48
    assert format_ci(acc) == "0.5000 [0.5000, 0.5000] (12 test patients, 2 seeds)"
    # a metric without a per-sample form keeps its seed mean and says why it has no CI
    assert s["precision"]["ci_low"] is None and "no per-sample form" in s["precision"]["note"]


def test_pooled_ci_rests_on_patients_and_contains_the_estimate():
    rng = np.random.default_rng(0)
    k = 30
    pats = [f"p{i}" for i in range(k) for _ in range(3)]
    labels = rng.integers(0, 3, 3 * k).tolist()
    seeds = []
    for s in range(3):
        hit = np.random.default_rng(s).random(3 * k) < 0.7
        pred = [y if h else (y + 1) % 3 for y, h in zip(labels, hit, strict=True)]
        seeds.append(_seed(["A4C", "A2C", "PLAX"], labels, pred, pats))
    out = summarise([r for r, _ in seeds], "test", [x for _, x in seeds], n_boot=300)
    for name in ("acc", "balanced_acc", "f1", "auc"):
        e = out[name]
        assert e["mean"] == pytest.approx(np.mean([r["test"][name] for r, _ in seeds]))
        assert e["ci_low"] <= e["mean"] <= e["ci_high"] and e["ci_low"] < e["ci_high"]
        assert e["n_patients"] == k and e["n_seeds"] == 3


def test_missing_test_classes_and_prediction_round_trip(tmp_path):
    df = pd.DataFrame(
        {
            "id": [f"i{i}" for i in range(8)],
            "patient_id": ["a", "a", "b", "b", "c", "c", "d", "d"],
            "split": ["train"] * 4 + ["test"] * 4,
            "view": ["A4C", "A2C", "PLAX", "A4C", "A4C", "A2C", "A4C", "A2C"],
        }
    )
    config = FinetuneConfig(task="classify", task_options={"target": "view"})
    task = get_task("classify", target="view")
    assert missing_test_classes(task, df, config) == ["PLAX"]

    # a seed's test predictions are stored (no pickle) and pooled again from disk by its own task
    task.prepare(df[df["split"] == "train"])
    rows = df[df["split"] == "test"].reset_index(drop=True)
    preds = {"label": np.array([0, 1, 0, 1]), "probs": _onehot([0, 1, 1, 1], 3), "index": np.arange(4)}
    assert save_predictions(tmp_path / "test_predictions.npz", preds, rows)
    samples = load_seed_samples(tmp_path, {"task_options": dict(task.options)}, config, df)
    fn, arrays, patients = samples["acc"]
    assert fn(*arrays) == pytest.approx(task.metrics(preds, rows)["acc"]) == pytest.approx(0.75)
    assert patients.tolist() == ["c", "c", "d", "d"]
    # ragged predictions (detection boxes) have no per-sample form: nothing stored
    assert not save_predictions(tmp_path / "ragged.npz", {"boxes": [np.zeros((1, 4))]}, rows.head(1))
