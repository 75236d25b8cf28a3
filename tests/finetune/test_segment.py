"""Segmentation metrics on hand-built masks, and the `segment` task end to end (CLI -> model -> eval)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage
from scipy.spatial.distance import cdist

from sonofm.finetune.segment import SegmentTask, segmentation_scores
from tests.finetune.conftest import TINY_OVERRIDES


def _square(size: int, lo: int, hi: int, label: int = 1) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    m[lo:hi, lo:hi] = label
    return m


def _hd95_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric 95th-percentile Hausdorff distance between mask boundaries, from first principles."""

    def edge(m: np.ndarray) -> np.ndarray:
        return np.argwhere(m & ~ndimage.binary_erosion(m))

    d = cdist(edge(a), edge(b))
    return max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95))


def test_dice_iou_hd95_on_known_masks() -> None:
    truth = np.stack([_square(40, 10, 30), _square(40, 10, 30)])  # 20 x 20 = 400 px
    pred = np.stack([_square(40, 12, 28), _square(40, 10, 30)])  # 16 x 16 = 256 px inside; perfect
    s = segmentation_scores(pred, truth, 2, spacing=np.array([0.5, 2.0]))
    assert s["dice"][0, 0] == pytest.approx(2 * 256 / (400 + 256))
    assert s["iou"][0, 0] == pytest.approx(256 / 400)
    assert s["dice"][1, 0] == pytest.approx(1.0) and s["iou"][1, 0] == pytest.approx(1.0)
    # inset by 2 px: pred edge -> truth edge is 2 px everywhere; truth corners are sqrt(8), their
    # neighbours sqrt(5): the 95th percentile of the truth side is 2.236 + 0.25 * (2.828 - 2.236)
    expected_px = _hd95_reference(pred[0].astype(bool), truth[0].astype(bool))
    assert expected_px == pytest.approx(math.sqrt(5) + 0.25 * (math.sqrt(8) - math.sqrt(5)))
    assert s["hd95"][0, 0] == pytest.approx(expected_px * 0.5)  # in mm
    assert s["hd95"][1, 0] == pytest.approx(0.0)


def test_empty_truth_and_missed_structures() -> None:
    empty = np.zeros((1, 32, 32), np.uint8)
    blob = _square(32, 8, 16)[None]
    s = segmentation_scores(blob, empty, 2)  # nothing to find: not counted
    assert np.isnan(s["dice"][0, 0]) and np.isnan(s["iou"][0, 0]) and np.isnan(s["hd95"][0, 0])
    s = segmentation_scores(empty, blob, 2, spacing=np.array([0.25]))  # missed entirely
    assert s["dice"][0, 0] == 0.0
    assert s["hd95"][0, 0] == pytest.approx(math.hypot(32, 32) * 0.25)


def test_multi_label_remap_and_per_class_metrics() -> None:
    task = SegmentTask(labels=[3, 5])
    assert task.num_classes == 3 and task.class_names == ["lv", "la"]
    mask = torch.zeros(32, 32, dtype=torch.long)
    mask[2:10, 2:10] = 3
    mask[20:30, 20:30] = 5
    mask[12:14, 12:14] = 4  # myocardium: not asked for -> background
    item = task._make_item({"image": torch.zeros(1, 32, 32), "mask": mask, "pixel_spacing_mm": 0.3}, {})
    assert set(item["mask"].unique().tolist()) == {0, 1, 2}
    assert int((item["mask"] == 1).sum()) == 64 and int((item["mask"] == 2).sum()) == 100
    truth = item["mask"].numpy().astype(np.uint8)[None]
    pred = truth.copy()
    pred[pred == 2] = 0  # LA missed
    preds = {"pred": pred, "truth": truth, "spacing": np.array([0.3])}
    m = task.metrics(preds, pd.DataFrame({"id": ["x"]}))
    assert m["dice_lv"] == pytest.approx(1.0) and m["dice_la"] == pytest.approx(0.0)
    assert m["dice"] == pytest.approx(0.5)
    assert "empty_fp_rate" not in m  # every image has a structure
    # two lesion-free images, one with a false positive: Dice ignores them, empty_fp_rate does not
    blank = np.zeros_like(truth)
    fp = blank.copy()
    fp[0, 5, 5] = 1
    preds = {
        "pred": np.concatenate([pred, blank, fp]),
        "truth": np.concatenate([truth, blank, blank]),
        "spacing": np.array([0.3, 0.3, 0.3]),
    }
    m = task.metrics(preds, pd.DataFrame({"id": ["x", "y", "z"]}))
    assert m["dice"] == pytest.approx(0.5) and m["empty_fp_rate"] == pytest.approx(0.5)
    assert task.metric_higher_is_better("empty_fp_rate") is False


def test_select_uses_regions_of_the_labels() -> None:
    df = pd.DataFrame(
        {
            "region": ["breast", "heart", "thyroid", "breast"],
            "mask": ["m/a.png", "m/b.png", "m/c.png", None],
        }
    )
    assert list(SegmentTask().select(df).index) == [0, 2]
    assert list(SegmentTask(labels=[3]).select(df).index) == [1]
    assert list(SegmentTask(regions=["thyroid"]).select(df).index) == [2]


def test_segment_job_cli_model_and_eval(breast_data, tmp_path) -> None:
    from typer.testing import CliRunner

    from sonofm.cli import app
    from sonofm.data.manifest import read_manifest
    from sonofm.eval.tasks.base import EvalContext
    from sonofm.eval.tasks.finetune import FinetuneEval
    from sonofm.models import load_model

    out = tmp_path / "run"
    args = [
        "finetune",
        "--model", "tiny", "--data", str(breast_data), "--task", "segment", "--adapter", "ht",
        "--out", str(out), "--seeds", "1", "--epochs", "2", "--batch-size", "8",
        *TINY_OVERRIDES, "task_options.feature_size=8", "task_options.dim=16", "train.progress=false",
    ]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "segment" and results["seeds"] == [1]
    seed = results["per_seed"][0]
    assert 0.0 <= results["test"]["dice"]["mean"] <= 1.0
    assert seed["test"]["n_images"] == seed["n_images"]["test"] > 0
    assert (out / "report.html").read_text().count("data:image/png;base64,") >= 1
    assert (out / "seed-1" / "metrics.jsonl").is_file()
    assert not (out / "seed-1" / "checkpoints").exists()  # removed once the model dir is written

    model = load_model(out / "seed-1" / "model")
    assert model.model_type == "task_model" and model.config.task == "segment"
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert model(x).shape == (2, 2, 32, 32)

    # the eval kind reproduces the job's test metrics from the saved model, with CIs and overlays
    df = read_manifest(breast_data)
    ctx = EvalContext(model=model, df=df, root=breast_data, embeddings={}, n_boot=20)
    tres = FinetuneEval(task="segment").run(ctx)
    assert tres.skipped is None
    assert tres.metrics["dice"].value == pytest.approx(results["test"]["dice"]["mean"], abs=1e-6)
    assert tres.metrics["dice"].low <= tres.metrics["dice"].value <= tres.metrics["dice"].high
    assert tres.higher_is_better["hd95_mm"] is False
    assert tres.plots["images"] and tres.plots["images"][0][0].startswith("data:image/png;base64,")
    assert FinetuneEval(task="classify").run(ctx).skipped  # a segment model is not a classifier


@pytest.mark.parametrize("kind", ["convnext", "monai_swin"])
@pytest.mark.parametrize("head", ["unet", "ht"])
def test_segmentation_heads_on_pyramid_towers(kind: str, head: str) -> None:
    """The UNet/FPN decoder and the HT head turn a 4/5-level pyramid into full-resolution logits."""
    from sonofm.models.config import ImageTowerConfig
    from sonofm.models.image_towers import ImageTower
    from sonofm.models.task_model import TaskModel, TaskModelConfig, feature_geometry, tower_config

    arch = (
        {"hidden_sizes": [8, 16, 16, 16], "depths": [1, 1, 1, 1]}
        if kind == "convnext"
        else {
            "embed_dim": 6,
            "depths": [1, 1, 1, 1],
            "num_heads": [1, 1, 2, 2],
            "window_size": 4,
            "patch_size": 2,
        }
    )
    tower = ImageTower(ImageTowerConfig(kind=kind, image_size=32, in_chans=1, mean=[0.5], std=[0.5], **arch))
    channels, strides = feature_geometry(tower)
    assert strides == ([4, 8, 16, 32] if kind == "convnext" else [2, 4, 8, 16, 32])
    cfg = TaskModelConfig(
        image=tower_config(tower),
        adapter="full",
        task="segment",
        task_options={"labels": [1, 2], "head": head, "feature_size": 4, "dim": 8},
        feature_channels=channels,
        feature_strides=strides,
    )
    model = TaskModel(cfg, tower=tower)
    out = model(torch.rand(2, 1, 32, 32))
    assert out.shape == (2, 3, 32, 32)
    out.logsumexp(1).mean().backward()
    assert all(p.grad is not None for p in model.head.parameters())
