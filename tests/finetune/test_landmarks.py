"""`landmarks` fine-tuning task: heatmap geometry, sub-pixel decoding, MRE in mm, training."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from sonofm.finetune.landmarks import (
    LandmarksTask,
    landmark_metrics,
    radial_errors_mm,
    to_stored_pixels,
)
from sonofm.finetune.tasks import collate, get_task
from sonofm.models.heads.landmarks import (
    PyramidDecoder,
    gaussian_heatmaps,
    heatmap_to_image,
    image_to_heatmap,
    quadratic_refine,
    soft_argmax,
)
from tests.finetune.fitting import eval_loss, fit, predict
from tests.tiny_models import tiny_task_model

TINY_IMAGE = {
    "image_size": 64,
    "patch_size": 8,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}


@pytest.fixture(scope="module")
def heart(tmp_path_factory):
    from sonofm.data.manifest import read_manifest
    from sonofm.sim.generator import simulate_dataset

    out = tmp_path_factory.mktemp("heart") / "d"
    simulate_dataset(out, 80, regions="heart", size=64, seed=0, progress=False)
    return out, read_manifest(out)


# ----------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_heatmap_encode_decode_recovers_subpixel_points(sigma):
    rng = np.random.default_rng(0)
    stride = 4.0
    # image-pixel points in a 128 px image (32x32 heatmap), >= 4 sigma from the border (soft-argmax
    # of a truncated Gaussian is biased towards the centre; training's L1 term learns that away)
    margin = (4 * sigma + 0.5) * stride
    pts = torch.tensor(rng.uniform(margin, 128 - margin, size=(3, 5, 2)), dtype=torch.float64)
    cells = image_to_heatmap(pts, stride)
    heat = gaussian_heatmaps(cells, (32, 32), sigma)
    by_softargmax = heatmap_to_image(soft_argmax(torch.log(heat)), stride)
    by_quadratic = heatmap_to_image(quadratic_refine(heat), stride)
    assert (by_softargmax - pts).abs().max() < 0.1
    assert (by_quadratic - pts).abs().max() < 0.1
    # and the integer argmax alone would not do: sub-pixel decoding is doing the work
    flat = heat.flatten(2).argmax(-1)
    argmax = torch.stack([flat % 32, flat // 32], -1).double()
    assert (heatmap_to_image(argmax, stride) - pts).abs().max() > 0.5


def test_heatmap_cell_geometry_round_trip():
    p = torch.tensor([[0.0, 0.0], [-0.5, -0.5], [63.0, 12.25]])
    for s in (1.0, 2.0, 4.0, 16.0):
        assert torch.allclose(heatmap_to_image(image_to_heatmap(p, s), s), p)
    # cell 0 at stride 4 covers pixels 0..3: its centre is pixel 1.5
    assert heatmap_to_image(torch.tensor([0.0]), 4.0).item() == 1.5


def test_pyramid_decoder_output_stride():
    feats = [torch.randn(2, 8, 4, 4), torch.randn(2, 16, 2, 2)]  # strides 8, 16 of a 32 px image
    dec = PyramidDecoder([8, 16], [8, 16], dim=16, out_stride=2)
    out = dec(feats)
    assert dec.out_stride == 2 and out.shape == (2, dec.out_channels, 16, 16)


# ----------------------------------------------------------------------------- metrics


def test_mre_mm_hand_built_with_resize_scaling():
    """Stored 64 px at 0.5 mm/px, model 32 px: one model pixel off = 2 stored px = 1 mm."""
    task = LandmarksTask(names=["a", "b", "c"], sigma=1.0)
    true_model = torch.tensor([[[10.0, 12.0], [20.0, 16.0], [3.0, 3.0]]])
    pred_model = true_model.clone()
    pred_model[0, 0, 0] += 1.0  # 1 model px in x
    pred_model[0, 2] += 10.0  # c is invisible: its error must not count
    stride = 2.0  # 16x16 heatmap for a 32 px model input
    logits = torch.log(gaussian_heatmaps(image_to_heatmap(pred_model, stride), (16, 16), 1.0))
    batch = {
        "image": torch.zeros(1, 1, 32, 32),
        "points": true_model,
        "visible": torch.tensor([[True, True, False]]),
        "scale": torch.tensor([32 / 64]),
        "spacing_mm": torch.tensor([0.5]),
    }
    preds = task.predict(logits, batch)
    # stored = (model + 0.5) / scale - 0.5
    np.testing.assert_allclose(preds["pred_px"][0, :2], [[22.5, 24.5], [40.5, 32.5]], atol=1e-3)
    np.testing.assert_allclose(preds["true_px"][0, :2], [[20.5, 24.5], [40.5, 32.5]], atol=1e-6)
    m = landmark_metrics(preds["pred_px"], preds["true_px"], preds["visible"], preds["spacing_mm"])
    assert m["mre_mm"] == pytest.approx(0.5, abs=1e-3)  # (1 mm + 0 mm) / 2
    assert m["mre_px"] == pytest.approx(1.0, abs=2e-3)  # stored pixels: (2 + 0) / 2
    assert m["sdr_2mm"] == 1.0 and m["n_landmarks"] == 2
    err = radial_errors_mm(preds["pred_px"], preds["true_px"], preds["visible"], preds["spacing_mm"])
    assert np.isnan(err[0, 2])
    # the eval bootstrap's per-sample form gives the same landmark-pooled numbers
    fns = task.metric_fns(preds, None)
    for name in ("mre_mm", "sdr_2mm", "sdr_4mm"):
        fn, arrays, _ = fns[name]
        assert fn(*arrays) == pytest.approx(m[name])


def test_to_stored_pixels_inverts_the_dataset_resize(heart):
    root, df = heart
    task = get_task("landmarks", views=["A4C"])
    sel = task.select(df)
    ds = task.dataset(sel, root, "train", 32, augment=False)
    batch = collate([ds[i] for i in range(4)])
    back = to_stored_pixels(batch["points"].numpy(), batch["scale"].numpy())
    for i in range(4):
        row = ds.table.iloc[i]
        for name, (x, y) in row["landmarks"].items():
            k = task.names.index(f"A4C/{name}")
            assert batch["visible"][i, k]
            np.testing.assert_allclose(back[i, k], [x, y], atol=1e-4)
    assert float(batch["spacing_mm"][0]) == pytest.approx(float(ds.table.iloc[0]["pixel_spacing_mm"]))


def test_select_fixes_channel_order_and_masks_missing(heart):
    root, df = heart
    task = get_task("landmarks")
    sel = task.select(df)
    assert task.names == sorted(task.names) and task.options["names"] == task.names
    assert any(n.startswith("A4C/") for n in task.names) and any(n.startswith("PLAX/") for n in task.names)
    ds = task.dataset(sel, root, "train", 64, augment=False)
    item = ds[0]
    row = ds.table.iloc[0]
    assert int(item["visible"].sum()) == len(row["landmarks"])  # the rest of the channels masked
    # a reloaded task with the stored options has the same channels without seeing data
    assert LandmarksTask(**task.options).names == task.names
    json.dumps(task.options)  # JSON-able (saved in the model config)


def test_no_landmarks_is_a_clear_error(heart):
    from sonofm.errors import DataError

    _, df = heart
    with pytest.raises(DataError, match="landmarks"):
        get_task("landmarks", region="breast").select(df)


def test_stored_size_reads_through_the_decoding_home(tmp_path):
    """A bomb PNG (small file, huge declared size) is one clear error naming the file, not a PIL
    DecompressionBombError traceback (or, under PIL's own limit, a silently accepted size)."""
    from PIL import Image

    from sonofm.data.decode import MAX_PIXELS, ImageDecodeError
    from sonofm.finetune.landmarks import stored_size
    from tests.security.corpus import bomb_png

    (tmp_path / "images").mkdir()
    Image.new("L", (48, 32)).save(tmp_path / "images" / "ok.png")
    assert stored_size(tmp_path, "images/ok.png") == (48, 32)
    for side in (30000, 9000):  # over PIL's own guard; under it but over sonofm's one pixel limit
        assert side * side > MAX_PIXELS
        bomb = tmp_path / "images" / f"bomb{side}.png"
        bomb.write_bytes(bomb_png(side))
        assert bomb.stat().st_size < 200_000
        with pytest.raises(ImageDecodeError, match=f"bomb{side}.png: .*pixel limit") as err:
            stored_size(tmp_path, f"images/bomb{side}.png")
        assert "\n" not in str(err.value)
    with pytest.raises(ImageDecodeError, match="missing.png: image file not found"):
        stored_size(tmp_path, "images/missing.png")


# ----------------------------------------------------------------------------- training


def test_trains_and_loss_decreases(heart):
    root, df = heart
    task = get_task("landmarks", views=["A4C", "A2C", "SC4C"])
    sel = task.select(df)
    model = tiny_task_model(task)
    ds = task.dataset(sel[sel["split"] == "train"], root, "train", 64, augment=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True, collate_fn=collate)
    fixed = collate([ds[i] for i in range(min(16, len(ds)))])
    before = eval_loss(model, fixed)
    fit(model, [fixed], epochs=25, lr=2e-3)  # fit a fixed set of images: the loss on them must fall
    after = eval_loss(model, fixed)
    assert after < 0.75 * before, (before, after)
    preds, rows = predict(model, loader, ds.table)
    m = model.task.metrics(preds, rows)
    assert math.isfinite(m["mre_mm"]) and 0 <= m["sdr_4mm"] <= 1
    figs = model.task.figures(preds, rows, root)
    assert figs and figs[0][0].startswith("data:image/png;base64,")


def test_job_end_to_end_and_reload(heart, tmp_path):
    """`sonofm finetune`'s job with this task: results, a task model dir that reloads and predicts."""
    from sonofm.finetune.job import FinetuneConfig, finetune
    from sonofm.models.io import load_model

    root, _ = heart
    cfg = FinetuneConfig(
        model="tiny",
        image=TINY_IMAGE,
        task="landmarks",
        task_options={"views": ["A4C"]},
        adapter="full",
        data={"path": str(root), "augment": 0.0},
        train={"epochs": 2, "batch_size": 8, "lr": 1e-3, "warmup_steps": 0, "progress": False},
        max_figures=2,
    )
    res = finetune(cfg, tmp_path / "run")
    summary = json.loads(res.results.read_text())
    assert summary["primary_metric"] == "mre_mm"
    assert summary["test"]["mre_mm"]["mean"] > 0
    model = load_model(str(tmp_path / "run" / "seed-1" / "model"))
    assert model.task.names == [n for n in model.task.names if n.startswith("A4C/")]
    out = model(torch.rand(2, 1, 64, 64))
    assert out.shape[:2] == (2, len(model.task.names))
