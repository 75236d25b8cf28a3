"""`enhance` fine-tuning task: compounded clean targets (physics), PSNR/SSIM, baselines, training."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from sonofm.finetune.enhance import lee_filter, median_baseline, psnr_ssim
from sonofm.finetune.tasks import collate, concat_predictions, get_task
from tests.finetune.fitting import eval_loss, fit
from tests.tiny_models import tiny_task_model

SIM = {"n": 36, "regions": "breast,liver", "size": 64, "seed": 2, "progress": False}


@pytest.fixture(scope="module")
def clean_data(tmp_path_factory):
    from sonofm.data.manifest import read_manifest
    from sonofm.sim.generator import simulate_dataset

    out = tmp_path_factory.mktemp("clean") / "d"
    simulate_dataset(out, clean_looks=6, **SIM)
    return out, read_manifest(out)


def _digest(paths) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- targets


def test_clean_option_keeps_the_default_images_byte_identical(clean_data, tmp_path):
    import json

    from sonofm.sim.generator import simulate_dataset

    root, df = clean_data
    plain = simulate_dataset(tmp_path / "plain", **SIM)
    assert _digest(root / p for p in df["image"]) == _digest(plain / p for p in df["image"])
    assert (plain / "manifest.parquet").read_bytes() != (root / "manifest.parquet").read_bytes()
    assert not (plain / "clean").exists()
    params = json.loads((plain / "dataset.json").read_text())["created_by"]["parameters"]
    assert "clean_looks" not in params  # the default dataset's parameters are unchanged
    card = json.loads((root / "dataset.json").read_text())["created_by"]
    assert card["parameters"]["clean_looks"] == 6 and "--clean-looks 6" in card["command"]
    assert all((root / p).is_file() for p in df["clean"])
    assert list(df["clean"]) == [f"clean/{i}.png" for i in df["id"]]


def test_compounding_reduces_speckle_contrast_by_sqrt_looks():
    """Intensity of fully developed speckle is exponential (contrast 1); the mean of K independent
    looks has contrast 1/sqrt(K) and the same mean."""
    from sonofm.sim.compound import RenderCall, compound_envelope
    from sonofm.sim.imaging import sample_imaging_params
    from sonofm.sim.tissue import Tissue, TissueModel

    tissue = TissueModel(Tissue("parenchyma", 0.0, 0.6, label=2))
    params = sample_imaging_params(
        0, "linear", 40.0, noise_db=-80.0, tgc_db=(0.0,) * 8, tgc_slope_db_cm_mhz=0.6, smoothing_px=0.0
    )
    call = RenderCall(tissue, params, 96)
    sl = (slice(30, 66), slice(20, 76))  # a central block of homogeneous tissue
    one = compound_envelope(call, 1, [7])[sl] ** 2
    many = compound_envelope(call, 16, [7])[sl] ** 2
    # divide out the deterministic depth profile (beam focusing), leaving the speckle
    one, many = one / one.mean(1, keepdims=True), many / many.mean(1, keepdims=True)
    c1 = one.std()
    c16 = many.std()
    assert 0.8 < c1 < 1.2, c1
    assert 0.15 < c16 < 0.35, c16  # 1 / sqrt(16) = 0.25
    raw1 = compound_envelope(call, 1, [7])[sl] ** 2
    raw16 = compound_envelope(call, 16, [7])[sl] ** 2
    assert raw16.mean() / raw1.mean() == pytest.approx(1.0, abs=0.15)


def test_one_look_is_one_ordinary_render():
    from sonofm.sim.compound import RenderCall, compound_image
    from sonofm.sim.imaging import sample_imaging_params
    from sonofm.sim.physics import render_bmode
    from sonofm.sim.tissue import Tissue, TissueModel

    tissue = TissueModel(Tissue("parenchyma", 0.0, 0.6, label=2))
    params = sample_imaging_params(1, "curvilinear", 80.0)
    img = compound_image(RenderCall(tissue, params, 48), 1, [3])
    ref = render_bmode(tissue, params, 48, np.random.default_rng([3, 0])).image
    assert np.mean(np.abs(img.astype(int) - ref.astype(int)) <= 1) > 0.999


# ----------------------------------------------------------------------------- metrics


def _ref_ssim(x, y, win=11, sigma=1.5, k1=0.01, k2=0.03):
    """Wang et al. 2004 SSIM with a Gaussian window, 'valid' region, data range 1 (numpy/scipy)."""
    from scipy.signal import convolve2d

    g = np.exp(-((np.arange(win) - (win - 1) / 2) ** 2) / (2 * sigma**2))
    w = np.outer(g, g) / g.sum() ** 2

    def f(z):
        return convolve2d(z, w, mode="valid")

    mx, my = f(x), f(y)
    sxx, syy, sxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    c1, c2 = k1**2, k2**2
    return np.mean(((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2)))


def test_psnr_ssim_against_reference_formulas():
    rng = np.random.default_rng(0)
    a = rng.random((4, 40, 40))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    psnr, ssim = psnr_ssim(a, b)
    for i in range(4):
        assert psnr[i] == pytest.approx(10 * np.log10(1.0 / np.mean((a[i] - b[i]) ** 2)), abs=1e-4)
        assert ssim[i] == pytest.approx(_ref_ssim(a[i], b[i]), abs=1e-4)
    same_p, same_s = psnr_ssim(a, a)
    assert np.all(np.isinf(same_p) | (same_p > 100)) and np.allclose(same_s, 1.0)


def test_classical_baselines_reduce_noise():
    rng = np.random.default_rng(1)
    clean = np.full((1, 48, 48), 0.5)
    clean[:, 16:32, 16:32] = 0.8
    noisy = np.clip(clean * rng.exponential(1.0, clean.shape) ** 0.3, 0, 1)  # multiplicative speckle-like
    base = psnr_ssim(noisy, clean)[0][0]
    assert psnr_ssim(median_baseline(noisy), clean)[0][0] > base + 1
    assert psnr_ssim(lee_filter(noisy[0])[None], clean)[0][0] > base + 1
    flat = np.full((16, 16), 0.3, dtype=np.float32)
    np.testing.assert_allclose(lee_filter(flat), flat, atol=1e-6)  # nothing to remove


# ----------------------------------------------------------------------------- training


def test_trains_and_loss_decreases(clean_data):
    root, df = clean_data
    task = get_task("enhance")
    sel = task.select(df)
    model = tiny_task_model(task)
    ds = model.task.dataset(sel, root, "train", 64, augment=False)
    fixed = collate([ds[i] for i in range(12)])
    model.eval()
    with torch.no_grad():  # the residual head starts at the identity
        torch.testing.assert_close(model(fixed["image"]), fixed["image"])
    before = eval_loss(model, fixed)
    fit(model, [fixed], epochs=12, lr=2e-3)
    after = eval_loss(model, fixed)
    assert after < 0.9 * before, (before, after)
    model.eval()
    with torch.no_grad():
        preds = concat_predictions([model.task.predict(model(fixed["image"]), fixed)])
    m = model.task.metrics(preds, ds.table.iloc[:12])
    for key in ("psnr", "ssim", "psnr_identity", "ssim_identity", "psnr_median", "psnr_lee"):
        assert np.isfinite(m[key])
    assert m["psnr"] > m["psnr_identity"]  # learnt something beyond the identity on what it fitted
    figs = model.task.figures(preds, ds.table.iloc[:12], root)
    assert figs and figs[0][0].startswith("data:image/png;base64,")


def test_missing_clean_column_is_a_clear_error(tmp_path):
    import pandas as pd

    from sonofm.errors import DataError

    with pytest.raises(DataError, match="clean_looks"):
        get_task("enhance").select(pd.DataFrame({"id": ["a"], "region": ["breast"]}))
