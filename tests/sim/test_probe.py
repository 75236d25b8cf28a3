"""Probe geometry, pixel grid, fan masks, label maps and imaging-parameter sampling."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sonofm.sim.imaging import (
    FREQ_RANGE_MHZ,
    ImagingParams,
    label_map,
    pixel_grid,
    pixel_to_world,
    sample_imaging_params,
    world_to_pixel,
)
from sonofm.sim.probe import beam_to_world, fov_bounds, inside_fan, world_to_beam
from sonofm.sim.tissue import Ellipse, Tissue, TissueModel

LINEAR = ImagingParams("linear", 10.0, depth_mm=40.0, focus_mm=20.0, width_mm=38.0)
CURVED = ImagingParams("curvilinear", 3.5, depth_mm=150.0, focus_mm=70.0, sector_deg=60.0, radius_mm=50.0)
PHASED = ImagingParams("phased", 2.5, depth_mm=150.0, focus_mm=70.0, sector_deg=90.0)
ALL = {"linear": LINEAR, "curvilinear": CURVED, "phased": PHASED}


@pytest.mark.parametrize("name", list(ALL))
def test_beam_world_round_trip(name):
    p = ALL[name]
    rng = np.random.default_rng(0)
    lo = -0.5 * (p.width_mm if name == "linear" else np.deg2rad(p.sector_deg))
    lat = rng.uniform(lo, -lo, 200)
    path = rng.uniform(0, p.depth_mm, 200)
    x, z = beam_to_world(p, lat, path)
    lat2, path2 = world_to_beam(p, x, z)
    np.testing.assert_allclose(lat2, lat, atol=1e-9)
    np.testing.assert_allclose(path2, path, atol=1e-9)
    assert inside_fan(p, x, z).all()


@pytest.mark.parametrize("name", list(ALL))
@pytest.mark.parametrize("size", [64, 97, 224])
def test_world_pixel_round_trip_and_grid(name, size):
    p = ALL[name]
    x, z, spacing, fan = pixel_grid(p, size)
    assert x.shape == z.shape == (size,) and fan.shape == (size, size) and fan.dtype == bool
    np.testing.assert_allclose(np.diff(x), spacing)
    np.testing.assert_allclose(np.diff(z), spacing)  # square, isotropic pixels
    col, row = world_to_pixel(p, size, x, z)
    np.testing.assert_allclose(col, np.arange(size), atol=1e-9)
    np.testing.assert_allclose(row, np.arange(size), atol=1e-9)
    c = np.random.default_rng(1).uniform(-0.5, size - 0.5, (2, 50))
    xw, zw = pixel_to_world(p, size, c[0], c[1])
    c2 = np.stack(world_to_pixel(p, size, xw, zw))
    np.testing.assert_allclose(c2, c, atol=1e-9)
    # the fan's bounding box fills the image along its longer side
    xmin, xmax, zmin, zmax = fov_bounds(p)
    assert max(xmax - xmin, zmax - zmin) == pytest.approx(size * spacing)
    assert np.array_equal(fan, fan[:, ::-1])  # symmetric about the probe axis
    assert 0.3 < fan.mean() <= 1.0


def test_linear_fan_is_a_rectangle():
    x, z, _, fan = pixel_grid(LINEAR, 100)
    expected = (np.abs(x)[None, :] <= 19.0) & (z[:, None] <= 40.0)
    assert np.array_equal(fan, expected)
    # 40 mm deep x 38 mm wide: the depth fills the image (every row is insonified at the centre)
    # and one empty column is left at each side
    assert fan[:, 50].all() and fan[0].sum() == 96
    assert not fan[:, 0].any() and not fan[:, -1].any()


def test_phased_fan_is_a_sector_with_apex_at_top_centre():
    size = 200
    x, z, spacing, fan = pixel_grid(PHASED, size)
    top = np.flatnonzero(fan[0])
    assert len(top) <= 2 and np.allclose(x[top].mean(), 0.0)  # apex at the top centre
    # half-width grows as z * tan(45 deg) while above the arc
    for r in (20, 60, 90):
        cols = np.flatnonzero(fan[r])
        assert x[cols].max() == pytest.approx(z[r] * np.tan(np.deg2rad(45.0)), abs=spacing)
    # bottom boundary is an arc of radius depth about the apex
    deepest = np.flatnonzero(fan[:, size // 2]).max()
    assert z[deepest] == pytest.approx(150.0, abs=spacing)
    assert not fan[-1].any()  # 90 deg sector: wider than deep, empty rows at the bottom


def test_curvilinear_fan_starts_on_the_skin_arc():
    size = 200
    x, z, spacing, fan = pixel_grid(CURVED, size)
    assert z[0] < 0  # the skin arc rises above z = 0 towards the edges
    centre = size // 2
    first = np.flatnonzero(fan[:, centre]).min()
    assert z[first] == pytest.approx(0.0, abs=spacing)
    r = np.hypot(x[None, :], z[:, None] + 50.0)
    assert (r[fan] >= 50.0 - 1e-9).all() and (r[fan] <= 200.0 + 1e-9).all()
    # top row: only the two ends of the skin arc
    cols = np.flatnonzero(fan[0])
    assert len(cols) > 0
    np.testing.assert_allclose(np.abs(x[cols]), 50.0 * np.sin(np.deg2rad(30.0)), atol=1.5 * spacing)


@pytest.mark.parametrize("name", list(ALL))
def test_label_map_lies_inside_the_fan(name):
    p = ALL[name]
    tm = TissueModel(Tissue("organ", 0.0, 0.5, label=2))
    tm.add(Ellipse(0.0, p.depth_mm * 0.5, 5.0, 5.0), Tissue("lesion", -10.0, 0.5, label=1))
    tm.add(Ellipse(0.0, p.depth_mm * 1.2, 50.0, 50.0), Tissue("outside", 0.0, 0.5, label=1))  # partly beyond
    labels = label_map(tm, p, 128)
    _, _, _, fan = pixel_grid(p, 128)
    assert labels.dtype == np.uint8
    assert (labels[~fan] == 0).all() and (labels[fan] > 0).all()
    assert (labels == 1).sum() > 10
    col, row = world_to_pixel(p, 128, 0.0, p.depth_mm * 0.5)
    assert labels[int(round(float(row))), int(round(float(col)))] == 1


@pytest.mark.parametrize("probe", ["linear", "curvilinear", "phased"])
def test_sampled_params_are_realistic_and_deterministic(probe):
    draws = [sample_imaging_params(np.random.default_rng(s), probe, (30.0, 60.0)) for s in range(200)]
    f_lo, f_hi = FREQ_RANGE_MHZ[probe]
    for p in draws:
        assert p.probe == probe
        assert f_lo <= p.center_freq_mhz <= f_hi
        assert 30.0 <= p.depth_mm <= 60.0 and 0 < p.focus_mm < p.depth_mm
        assert 45.0 <= p.dynamic_range_db <= 70.0
        assert len(p.tgc_db) == 8 and max(abs(v) for v in p.tgc_db) <= 4.0
        if probe == "linear":
            assert 30.0 <= p.width_mm <= 50.0 and p.sector_deg is None
        else:
            assert p.sector_deg <= 90.0 and p.width_mm is None
        assert (p.radius_mm is not None) == (probe == "curvilinear")
    # the draws actually vary (models must not learn one look)
    assert np.std([p.center_freq_mhz for p in draws]) > 0.5
    assert np.std([p.gain_db for p in draws]) > 1.0
    a = sample_imaging_params(np.random.default_rng(5), probe, (30.0, 60.0))
    b = sample_imaging_params(np.random.default_rng(5), probe, (30.0, 60.0))
    assert a == b


def test_overrides_pin_one_knob_without_shifting_the_others():
    a = sample_imaging_params(np.random.default_rng(3), "linear", (30.0, 60.0))
    b = sample_imaging_params(np.random.default_rng(3), "linear", (30.0, 60.0), gain_db=4.0, focus_mm=12.0)
    assert b.gain_db == 4.0 and b.focus_mm == 12.0
    assert b.center_freq_mhz == a.center_freq_mhz and b.tgc_db == a.tgc_db
    c = sample_imaging_params(3, "phased", 120.0)
    assert c.depth_mm == 120.0
    with pytest.raises(ValueError, match="unknown imaging parameter"):
        sample_imaging_params(3, "linear", 40.0, gian_db=1.0)
    with pytest.raises(ValueError, match="probe must be one of"):
        sample_imaging_params(3, "convex", 40.0)
    with pytest.raises(ValueError, match="depth_mm"):
        sample_imaging_params(3, "linear", (60.0, 30.0))


def test_to_dict_is_json_and_round_trips():
    p = sample_imaging_params(np.random.default_rng(0), "curvilinear", (80.0, 160.0))
    d = json.loads(json.dumps(p.to_dict()))
    q = ImagingParams.from_dict(d)
    assert q.probe == p.probe and q.depth_mm == pytest.approx(p.depth_mm, abs=1e-3)
    assert len(q.tgc_db) == len(p.tgc_db)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"probe": "sector"}, "probe"),
        ({"center_freq_mhz": -1.0}, "center_freq_mhz"),
        ({"width_mm": None}, "width_mm"),
        ({"depth_mm": 0.0}, "depth_mm"),
        ({"focus_mm": -3.0}, "focus_mm"),
    ],
)
def test_invalid_params_name_the_field(kwargs, field):
    base = {"probe": "linear", "center_freq_mhz": 10.0, "depth_mm": 40.0, "focus_mm": 20.0, "width_mm": 38.0}
    with pytest.raises(ValueError, match=field):
        ImagingParams(**{**base, **kwargs})
    with pytest.raises(ValueError, match="sector_deg"):
        ImagingParams("phased", 2.5, depth_mm=100.0, focus_mm=50.0)
    with pytest.raises(ValueError, match="radius_mm"):
        ImagingParams("curvilinear", 3.5, depth_mm=100.0, focus_mm=50.0, sector_deg=60.0)
    with pytest.raises(ValueError, match="size"):
        pixel_grid(LINEAR, 1)


@settings(max_examples=40, deadline=None)
@given(
    probe=st.sampled_from(["linear", "curvilinear", "phased"]),
    depth=st.floats(10.0, 250.0),
    width=st.floats(10.0, 80.0),
    sector=st.floats(20.0, 120.0),
    radius=st.floats(10.0, 100.0),
    size=st.integers(8, 160),
)
def test_geometry_properties_for_any_probe(probe, depth, width, sector, radius, size):
    p = ImagingParams(
        probe,
        5.0,
        depth_mm=depth,
        focus_mm=depth / 2,
        width_mm=width if probe == "linear" else None,
        sector_deg=None if probe == "linear" else sector,
        radius_mm=radius if probe == "curvilinear" else None,
    )
    x, z, spacing, fan = pixel_grid(p, size)
    xmin, xmax, zmin, zmax = fov_bounds(p)
    # the image spans the fan's bounding box along its longer side, and the fan fits inside it
    assert x[0] - spacing / 2 <= xmin + 1e-9 and x[-1] + spacing / 2 >= xmax - 1e-9
    assert z[0] - spacing / 2 == pytest.approx(zmin) and z[-1] + spacing / 2 >= zmax - 1e-9
    narrow = (xmax - xmin) if probe == "linear" else depth
    if narrow > 2 * spacing:  # a fan narrower than a pixel may fall between pixel centres
        assert fan.any()
    rows, cols = np.nonzero(fan)
    lat, path = world_to_beam(p, x[cols], z[rows])
    assert (path >= -1e-9).all() and (path <= depth + 1e-9).all()
    xb, zb = beam_to_world(p, lat, path)
    np.testing.assert_allclose(xb, x[cols], atol=1e-6)
    np.testing.assert_allclose(zb, z[rows], atol=1e-6)
    np.testing.assert_array_equal(fan, fan[:, ::-1])
