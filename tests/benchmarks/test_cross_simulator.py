# SPDX-License-Identifier: Apache-2.0
"""The cross-simulator benchmark's phantoms, dataset writer and scoring (benchmarks/cross_simulator.py).

Phantom and dataset tests need no pymust (SIMUS is replaced by a synthetic envelope); one tiny
SIMUS render runs when pymust is installed (the bench extra).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # cross_simulator imports pymust_phantoms by this name
    spec.loader.exec_module(mod)
    return mod


pp = _load("pymust_phantoms")


def _case(kind: str, shape: str = "round", margin: str = "circumscribed", **kw):
    import dataclasses

    base = next(c for c in pp.sample_cases(48, 0) if c.kind == kind)
    calcs = base.calcs_mm
    if calcs:  # keep the calcifications where the lesion now is
        dx, dz = 0.0 - base.centre_mm[0], 18.0 - base.centre_mm[1]
        calcs = tuple((x + dx, z + dz) for x, z in calcs)
    fields = dict(
        shape=shape,
        margin=margin,
        centre_mm=(0.0, 18.0),
        semi_axes_mm=(5.0, 5.0),
        depth_mm=34.0,
        harmonics=(),
        spikes=(),
        calcs_mm=calcs,
    )
    return dataclasses.replace(base, **(fields | kw))


def _rms(v: np.ndarray) -> float:
    return float(np.sqrt(np.mean(v**2)))


def test_cases_are_balanced_and_use_the_taxonomy_vocabulary():
    from sonofm import taxonomy as tx

    cases = pp.sample_cases(48, 0)
    assert [c.id for c in cases] == [c.id for c in pp.sample_cases(48, 0)]  # seeded
    assert {k: sum(c.kind == k for c in cases) for k in pp.KINDS} == {k: 8 for k in pp.KINDS}
    for c in cases:
        assert c.depth_mm - 6.0 > c.centre_mm[1] > 6.0
        x0, z0, x1, z1 = pp.lesion_extent_mm(c)
        tags = pp.case_tags(c, x1 - x0, z1 - z0)
        for dim, ids in tags.items():
            assert set(ids) <= {t.id for t in tx.tags(dim)}, (dim, ids)
        if c.shape == "oval_tall":
            assert "taller_than_wide" in tags["shape"]
        if c.shape == "oval_wide":
            assert "wider_than_tall" in tags["shape"]
        assert tags["echogenicity"] == [pp.ECHO_TAG[c.kind]]


def test_cyst_has_no_scatterers_and_gains_are_where_declared():
    probe = pp.Probe()
    cyst = _case("cyst")
    ph = pp.build_phantom(cyst, probe)
    x, z = ph.x_m * 1e3, ph.z_m * 1e3
    assert not pp.lesion_mask(cyst, x, z).any()  # anechoic: nothing inside the contour
    for kind, want in (("hypoechoic", 0.3), ("hyperechoic", 3.0), ("isoechoic_halo", 1.0)):
        c = _case(kind)
        ph = pp.build_phantom(c, probe)
        x, z, rc = ph.x_m * 1e3, ph.z_m * 1e3, ph.rc
        inside = pp.lesion_weight(c, x, z) > 0.99
        inside &= np.hypot(x - c.centre_mm[0], z - c.centre_mm[1]) < 4.0  # clear of calcifications
        level = (np.abs(z - c.centre_mm[1]) < 5) & (np.abs(x - c.centre_mm[0]) > 9)
        ratio = _rms(rc[inside]) / _rms(rc[level])
        assert want * 0.75 < ratio < want * 1.33, (kind, ratio)
    halo = _case("isoechoic_halo")
    ph = pp.build_phantom(halo, probe)
    ring = pp.halo_weight(halo, ph.x_m * 1e3, ph.z_m * 1e3) > 0
    assert _rms(ph.rc[ring]) < 0.4 * _rms(ph.rc[~ring & (ph.z_m * 1e3 > 3)])


def test_posterior_enhancement_and_shadowing_are_below_the_lesion():
    probe = pp.Probe()
    for kind, sign in (("cyst", 1), ("macrocalcified", -1)):
        c = _case(kind)
        ph = pp.build_phantom(c, probe)
        x, z, rc = ph.x_m * 1e3, ph.z_m * 1e3, ph.rc
        cx = np.mean([p[0] for p in c.calcs_mm]) if c.calcs_mm else c.centre_mm[0]
        deep = (z > 26) & (z < 33)
        behind = deep & (np.abs(x - cx) < 0.8)
        beside = deep & (np.abs(x - cx) > 8)
        db = 20 * np.log10(_rms(rc[behind]) / _rms(rc[beside]))
        assert sign * db > 3.0, (kind, db)
        assert pp.case_tags(c, 10, 10)["posterior"] == (["enhancement"] if sign > 0 else ["shadowing"])
    plain = _case("hypoechoic")
    assert pp.case_tags(plain, 10, 10)["posterior"] == []


def test_spiculated_margin_reaches_beyond_the_ellipse():
    smooth = _case("hypoechoic")
    spikes = ((0.0, 0.6), (np.pi / 2, 0.6))
    spiky = _case("hypoechoic", margin="spiculated", spikes=spikes)
    theta = np.array([0.0, np.pi / 2, np.pi / 4])
    r0, r1 = pp.contour_radius(smooth, theta), pp.contour_radius(spiky, theta)
    assert np.allclose(r1[:2], 1.6 * r0[:2]) and np.isclose(r1[2], r0[2])


def _fake_envelope(phantom, probe, grid_mm):
    """Stand-in for SIMUS + DAS: the scatterers' |rc| binned on the grid, plus a floor."""
    x, z = grid_mm
    step = x[1] - x[0]
    ix = np.clip(((phantom.x_m * 1e3 - x[0]) / step).round().astype(int), 0, len(x) - 1)
    iz = np.clip(((phantom.z_m * 1e3 - z[0]) / step).round().astype(int), 0, len(z) - 1)
    env = np.full((len(z), len(x)), 0.05)
    np.add.at(env, (iz, ix), np.abs(phantom.rc))
    return env, {"simus_s": 0.0, "beamform_s": 0.0}


def test_dataset_is_a_valid_sonofm_dataset_and_is_reused(tmp_path, monkeypatch):
    from sonofm.data.manifest import read_manifest
    from sonofm.errors import UserError

    monkeypatch.setattr(pp, "render_envelope", _fake_envelope)
    out = tmp_path / "pym"
    made = pp.make_dataset(out, 12, seed=1, size=32, density=2.0)
    assert made["rendered_now"] == 12 and len(made["timings"]) == 12
    df = read_manifest(out, check_files=True)
    assert len(df) == 12 and set(df["split"]) == {"test"} and set(df["source"]) == {"pymust"}
    assert df["patient_id"].is_unique and set(df["region"]) == {"breast"}
    cases = {c.id: c for c in pp.sample_cases(12, 1)}
    for _, row in df.iterrows():
        c = cases[row["id"]]
        assert row["attributes"]["echogenicity"] == [pp.ECHO_TAG[c.kind]]
        assert row["attributes"]["organ"] == ["breast"]
        assert row["pixel_spacing_mm"] == pytest.approx(pp.Probe().aperture_mm / 32)
        assert row["report"].startswith("Findings:") and row["bbox"]
    assert (out / "dataset.json").is_file()
    assert pp.make_dataset(out, 12, seed=1, size=32, density=2.0)["rendered_now"] == 0  # cached
    with pytest.raises(UserError, match="other parameters"):
        pp.make_dataset(out, 12, seed=2, size=32, density=2.0)


def test_attribute_scores_run_the_suite_task_on_both_sets(tmp_path, monkeypatch):
    import torch

    from sonofm.models import build_model
    from tests.tiny_models import tiny_dual_encoder

    monkeypatch.setattr(pp, "render_envelope", _fake_envelope)
    data = tmp_path / "pym"
    pp.make_dataset(data, 12, seed=0, size=32, density=2.0)
    cs = _load("cross_simulator")
    torch.manual_seed(0)
    model = build_model(tiny_dual_encoder("cross-sim-test")).eval()
    scores = cs.attribute_scores(model, "tiny", data, regions=None, n_boot=20, seed=0, workers=0)
    assert scores["n_lesion_images"] == 12
    assert "echogenicity/anechoic" in scores["auc"] and scores["positives"]["echogenicity/anechoic"] == 2
    rows = cs.compare(scores, scores, None)
    assert all(r["gap"] == 0 for r in rows)
    assert cs.summary(rows)["tags_on_both"] == len(rows)


def test_tiny_simus_render():
    pytest.importorskip("pymust")
    pytest.importorskip("threadpoolctl")
    c = _case("cyst", depth_mm=30.0)
    image, mask, info = pp.render_case(c, pp.Probe(), 32, density_per_mm2=1.5)
    assert image.shape == mask.shape == (32, 32) and image.dtype == np.uint8
    assert info["scatterers"] < 2000 and info["simus_s"] > 0
    inside = mask == 1
    x, z, _ = pp.square_grid(pp.Probe(), 32, oversample=1)
    level = (np.abs(z - c.centre_mm[1]) < 4)[:, None] & (np.abs(x) > 10)[None, :]
    assert image[inside].mean() < image[level].mean() - 20  # the cyst is darker than the tissue
    assert (image[np.asarray(z > c.depth_mm)] == 0).all()  # below the imaged depth: black
