"""Tissue models: shapes as signed distances, soft edges, layering and texture."""

from __future__ import annotations

import numpy as np
import pytest

from sonofm.sim.tissue import (
    ANECHOIC_DB,
    Band,
    Ellipse,
    Polygon,
    StarShape,
    Tissue,
    TissueModel,
    Tube,
    smooth_field,
)


def test_ellipse_signed_distance_and_rotation():
    e = Ellipse(2.0, 10.0, 4.0, 2.0)
    assert e.inside(2.0, 10.0) and e.inside(5.9, 10.0) and not e.inside(6.1, 10.0)
    assert e.inside(2.0, 11.9) and not e.inside(2.0, 12.1)
    # radial approximation of the 1 mm true distance (documented as approximate)
    assert 0.5 < float(e.signed_distance(np.array(7.0), np.array(10.0))) < 1.5
    r = Ellipse(0.0, 0.0, 4.0, 1.0, angle_deg=90.0)  # long axis now along z
    assert r.inside(0.0, 3.5) and not r.inside(3.5, 0.0)


def test_star_shape_radius_and_bounds():
    s = StarShape(0.0, 0.0, 5.0, 5.0, harmonics=[(4, 0.2, 0.0)], spikes=[(0.0, 0.5, 0.1)])
    phi = np.array([0.0, np.pi / 4, np.pi / 2])
    np.testing.assert_allclose(s.radius(phi)[1:], [1 - 0.2, 1 + 0.2], atol=1e-6)
    assert s.radius(np.array([0.0]))[0] == pytest.approx(1.0 + 0.2 + 0.5)
    # the spike reaches 8.5 mm along +x; bounds must contain every inside point
    assert s.inside(8.4, 0.0) and not s.inside(8.6, 0.0)
    xmin, zmin, xmax, zmax = s.bounds()
    g = np.linspace(-12, 12, 241)
    xx, zz = np.meshgrid(g, g)
    ins = s.inside(xx, zz)
    assert (xx[ins] >= xmin).all() and (xx[ins] <= xmax).all()
    assert (zz[ins] >= zmin).all() and (zz[ins] <= zmax).all()


def test_polygon_signed_distance_is_exact_for_a_square():
    sq = Polygon(np.array([[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 4.0]]))
    x = np.array([2.0, 1.0, 6.0, 5.0])
    z = np.array([2.0, 2.0, 2.0, 5.0])
    np.testing.assert_allclose(sq.signed_distance(x, z), [-2.0, -1.0, 2.0, np.sqrt(2.0)], atol=1e-12)
    with pytest.raises(ValueError, match="Polygon"):
        Polygon(np.zeros((2, 2)))


def test_band_and_tube():
    b = Band([-10.0, 10.0], [2.0, 4.0], [-10.0, 10.0], [6.0, 6.0])
    assert b.inside(-10.0, 3.0) and not b.inside(10.0, 3.0)  # the top curve slopes from 2 to 4 mm
    assert Band.flat(1.0, 3.0).signed_distance(np.array(0.0), np.array(2.0)) == pytest.approx(-1.0)
    t = Tube(np.array([[-10.0, 5.0], [10.0, 5.0]]), radius=2.0)
    np.testing.assert_allclose(
        t.signed_distance(np.array([0.0, 0.0, 13.0]), np.array([5.0, 8.0, 5.0])), [-2.0, 1.0, 1.0]
    )


def test_soft_edge_weight():
    e = Ellipse(0.0, 0.0, 5.0, 5.0, edge_mm=2.0)
    w = e.weight(np.array([0.0, 5.0, 5.5, 7.0]), np.zeros(4))
    np.testing.assert_allclose(w, [1.0, 0.5, 0.25, 0.0], atol=1e-9)
    assert ((w >= 0) & (w <= 1)).all()


def test_tissue_model_layers_later_wins_and_labels():
    tm = TissueModel(Tissue("bg", 0.0, 0.5, label=2))
    tm.add(Ellipse(0.0, 10.0, 5.0, 5.0), Tissue("lesion", -10.0, 1.0, label=1))
    tm.add(Ellipse(0.0, 10.0, 2.0, 2.0), Tissue("cyst", ANECHOIC_DB - 40, 0.002, label=None))
    x = np.array([20.0, 4.0, 0.0])
    z = np.array([10.0, 10.0, 10.0])
    props = tm.properties(x, z)
    np.testing.assert_allclose(props.echogenicity_db[:2], [0.0, -10.0])
    np.testing.assert_allclose(props.attenuation, [0.5, 1.0, 0.002])
    np.testing.assert_array_equal(props.label, [2, 1, 1])  # label None keeps the label underneath
    np.testing.assert_allclose(props.amplitude, [1.0, 10 ** (-0.5), 0.0])
    # works on 2-D grids and broadcasts
    g = tm.properties(np.linspace(-8, 8, 5)[None, :], np.linspace(0, 20, 4)[:, None])
    assert g.label.shape == (4, 5) and g.label.dtype == np.uint8


def test_labels_only_path_matches_properties():
    tm = TissueModel(Tissue("bg", 0.0, 0.5, label=2, texture_db=3.0))
    tm.add(Band.flat(0.0, 3.0, edge_mm=1.0), Tissue("skin", 5.0, 0.8, label=None))
    tm.add(Ellipse(0.0, 10.0, 5.0, 4.0, edge_mm=2.0), Tissue("lesion", -10.0, 1.0, label=1))
    tm.add(Ellipse(2.0, 10.0, 2.0, 2.0, edge_mm=0.5), Tissue("core", -20.0, 1.0, label=None))
    vessel = Tube(np.array([[-20.0, 18.0], [20.0, 16.0]]), 1.5, edge_mm=0.4)
    tm.add(vessel, Tissue("vessel", -60.0, 0.1, label=9))
    g = np.linspace(-15, 15, 121)
    xx, zz = np.meshgrid(g, np.linspace(0, 25, 101))
    np.testing.assert_array_equal(tm.labels(xx, zz), tm.properties(xx, zz).label)
    assert set(np.unique(tm.labels(xx, zz))) == {1, 2, 9}


def test_smooth_field_is_unit_variance_and_deterministic():
    g = np.linspace(0, 200, 300)
    xx, zz = np.meshgrid(g, g)
    f = smooth_field(xx, zz, 3.0, seed=4)
    assert abs(f.mean()) < 0.1 and f.std() == pytest.approx(1.0, abs=0.15)
    np.testing.assert_array_equal(f, smooth_field(xx, zz, 3.0, seed=4))
    assert not np.allclose(f, smooth_field(xx, zz, 3.0, seed=5))
    t = Tissue("het", -3.0, texture_db=4.0, texture_scale_mm=3.0, texture_seed=4)
    np.testing.assert_allclose(t.echogenicity_field(xx, zz), -3.0 + 4.0 * f)
