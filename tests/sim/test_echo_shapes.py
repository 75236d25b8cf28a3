"""Echo shape primitives: axis frames, axial profiles, unions and dilations."""

from __future__ import annotations

import numpy as np
import pytest

from sonofm.sim.echo.shapes import AxisFrame, Dilated, ProfileShape, Union
from sonofm.sim.tissue import Ellipse, Polygon


def test_axis_frame_round_trip_and_orientation():
    fr = AxisFrame.from_angle((3.0, 40.0), 200.0)  # pointing up and slightly left
    s, v = np.array([0.0, 10.0, -4.0]), np.array([2.0, -7.0, 5.0])
    p = fr.point(s, v)
    s2, v2 = fr.local(p[:, 0], p[:, 1])
    assert np.allclose(s2, s) and np.allclose(v2, v)
    assert fr.az < 0 and fr.ax < 0  # up (towards the probe) and left
    assert fr.n[0] > 0  # +n is to the image right for an upward axis
    # an Ellipse with the frame's angle has its rz semi-axis along the axis
    e = Ellipse(3.0, 40.0, 2.0, 10.0, fr.ellipse_angle_deg())
    tip = fr.point(9.9, 0.0)
    side = fr.point(0.0, 2.5)
    assert e.inside(tip[0], tip[1]) and not e.inside(side[0], side[1])


def test_profile_shape_inside_and_perpendicular_distance():
    fr = AxisFrame.from_points((0.0, 0.0), (0.0, -1.0))
    sh = ProfileShape(fr, [0.0, 50.0, 100.0], [20.0, 20.0, 0.0], [10.0, 10.0, 0.0])
    # across the axis where the profile is parallel to it, the distance is exact
    for v, want in [(25.0, 5.0), (15.0, -5.0), (-13.0, 3.0), (0.0, -10.0)]:
        p = fr.point(30.0, v)
        assert float(sh.signed_distance(p[0], p[1])) == pytest.approx(want)
    assert not sh.inside(*fr.point(-1.0, 0.0)) and not sh.inside(*fr.point(101.0, 0.0))
    assert sh.inside(*fr.point(99.0, 0.0))
    x0, z0, x1, z1 = sh.bounds()
    assert (x0, x1) == pytest.approx((-10.0, 20.0)) and (z0, z1) == pytest.approx((-100.0, 0.0))
    with pytest.raises(ValueError, match="increasing"):
        ProfileShape(fr, [0.0, 0.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0])


def test_dilated_union_is_exact_within_its_horizon():
    poly = Polygon([[0.0, 0.0], [30.0, 0.0], [15.0, 40.0]])
    ell = Ellipse(60.0, 20.0, 12.0, 8.0)
    union = Union([poly, ell])
    rng = np.random.default_rng(0)
    x, z = rng.uniform(-40, 110, 20000), rng.uniform(-40, 80, 20000)
    exact = np.minimum(poly.signed_distance(x, z), ell.signed_distance(x, z))
    assert np.allclose(union.signed_distance(x, z), exact)
    for by in (0.0, 4.0, 15.0):
        dil = Dilated(union, by, edge_mm=0.5)
        got = dil.signed_distance(x, z)
        near = exact - by <= 1.0
        assert np.allclose(got[near], exact[near] - by)  # exact where the edge ramp is
        assert np.array_equal(dil.inside(x, z), exact <= by)  # same membership everywhere
        assert np.all(got[~near] > 0.0)
