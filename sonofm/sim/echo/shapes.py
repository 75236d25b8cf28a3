"""Shapes the cardiac views need beyond `sonofm.sim.tissue`: axial profiles, unions and dilations.

A ventricle is best described along its long axis: at axial position ``s`` (0 at the base, growing
towards the apex) it spans ``-w_neg(s) <= v <= w_pos(s)`` across the axis. That one description
gives the cavity, the myocardium (the cavity plus a wall-thickness profile), and a band next to a
wall (the PLAX right ventricle, with a negative ``w_neg``). Its signed distance
``max(-s, s - length, v - w_pos(s), -v - w_neg(s))`` is exact across the axis (where the calipers
measure) and approximate near the ends; the inside test is exact everywhere, which is all the
masks depend on. Union and dilation give the pericardial effusion rim around the ventricles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sonofm.sim.tissue import Shape


@dataclass(frozen=True)
class AxisFrame:
    """An origin and a unit axis; ``n`` is the axis turned +90 degrees: n = (-a_z, a_x)."""

    ox: float
    oz: float
    ax: float
    az: float

    @classmethod
    def from_points(cls, origin: Sequence[float], towards: Sequence[float]) -> AxisFrame:
        d = np.asarray(towards, dtype=np.float64) - np.asarray(origin, dtype=np.float64)
        d = d / np.hypot(d[0], d[1])
        return cls(float(origin[0]), float(origin[1]), float(d[0]), float(d[1]))

    @classmethod
    def from_angle(cls, origin: Sequence[float], angle_deg: float) -> AxisFrame:
        """Axis at `angle_deg` measured from +z (down) towards +x (right)."""
        t = np.deg2rad(angle_deg)
        return cls(float(origin[0]), float(origin[1]), float(np.sin(t)), float(np.cos(t)))

    @property
    def n(self) -> tuple[float, float]:
        return (-self.az, self.ax)

    def point(self, s: float | np.ndarray, v: float | np.ndarray) -> np.ndarray:
        """World (x, z) of local (s along the axis, v across it); shape (..., 2)."""
        s = np.asarray(s, dtype=np.float64)
        v = np.asarray(v, dtype=np.float64)
        x = self.ox + s * self.ax - v * self.az
        z = self.oz + s * self.az + v * self.ax
        return np.stack(np.broadcast_arrays(x, z), axis=-1)

    def local(self, x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dx = np.asarray(x, dtype=np.float64) - self.ox
        dz = np.asarray(z, dtype=np.float64) - self.oz
        return dx * self.ax + dz * self.az, -dx * self.az + dz * self.ax

    def shifted(self, dx: float, dz: float) -> AxisFrame:
        return AxisFrame(self.ox + dx, self.oz + dz, self.ax, self.az)

    def ellipse_angle_deg(self) -> float:
        """`tissue.Ellipse` angle whose second semi-axis (rz) lies along this axis."""
        return float(np.rad2deg(np.arctan2(-self.ax, self.az)))


@dataclass
class ProfileShape(Shape):
    """Points with 0 <= s <= s_knots[-1] and -w_neg(s) <= v <= w_pos(s) in an `AxisFrame`."""

    frame: AxisFrame
    s_knots: np.ndarray
    w_pos: np.ndarray
    w_neg: np.ndarray
    edge_mm: float = 0.0

    def __post_init__(self) -> None:
        self.s_knots = np.asarray(self.s_knots, dtype=np.float64)
        self.w_pos = np.asarray(self.w_pos, dtype=np.float64)
        self.w_neg = np.asarray(self.w_neg, dtype=np.float64)
        if not (self.s_knots.shape == self.w_pos.shape == self.w_neg.shape) or self.s_knots.ndim != 1:
            raise ValueError("ProfileShape needs s_knots, w_pos, w_neg of one shared 1-D shape")
        if np.any(np.diff(self.s_knots) <= 0):
            raise ValueError("ProfileShape.s_knots must be strictly increasing")
        pts = np.concatenate(
            [self.frame.point(self.s_knots, self.w_pos), self.frame.point(self.s_knots, -self.w_neg)]
        )
        lo = pts.min(axis=0) - self.edge_mm
        hi = pts.max(axis=0) + self.edge_mm
        self._bounds = (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))

    @property
    def length(self) -> float:
        return float(self.s_knots[-1])

    def outline(self) -> np.ndarray:
        """Closed outline (N, 2) in world mm: +n side base->tip, then -n side tip->base."""
        a = self.frame.point(self.s_knots, self.w_pos)
        b = self.frame.point(self.s_knots[::-1], -self.w_neg[::-1])
        return np.concatenate([a, b])

    def signed_distance(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        s, v = self.frame.local(x, z)
        wp = np.interp(s, self.s_knots, self.w_pos)
        wn = np.interp(s, self.s_knots, self.w_neg)
        s0 = self.s_knots[0]
        return np.maximum(np.maximum(s0 - s, s - self.length), np.maximum(v - wp, -v - wn))

    def bounds(self) -> tuple[float, float, float, float]:
        return self._bounds


def _box_distance(x: np.ndarray, z: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """Euclidean distance to an axis-aligned box (0 inside): a lower bound of any enclosed shape's
    signed distance at points outside the box."""
    x0, z0, x1, z1 = box
    dx = np.maximum(np.maximum(x0 - x, x - x1), 0.0)
    dz = np.maximum(np.maximum(z0 - z, z - z1), 0.0)
    return np.hypot(dx, dz)


@dataclass
class Union(Shape):
    """Inside any of the shapes."""

    shapes: Sequence[Shape]
    edge_mm: float = 0.0

    def signed_distance(self, x: np.ndarray, z: np.ndarray, horizon_mm: float = np.inf) -> np.ndarray:
        """Min of the members' signed distances, evaluated only near each member.

        A member is evaluated at points within `horizon_mm` of its bounding box; farther points get
        the distance to the box instead. Every member here has a signed distance of at least half
        the Euclidean distance (polygons: equal; `ProfileShape`: >= 1/sqrt(2); ellipses with axis
        ratio <= 2), so results at or below ``horizon_mm / 2`` are exact, which is all a caller
        testing ``sd <= d`` with a ramp of ``edge`` needs when ``horizon_mm >= 2 (d + edge)``.
        Saves the polygon work far from the RV.
        """
        x, z = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(z, dtype=np.float64))
        out = np.full(x.shape, np.inf)
        for sh in self.shapes:
            box = sh.bounds()
            if not np.isfinite(horizon_mm):
                out = np.minimum(out, sh.signed_distance(x, z))
                continue
            near_d = _box_distance(x, z, box)
            near = near_d <= horizon_mm
            sd = near_d.copy()
            if near.any():
                sd[near] = sh.signed_distance(x[near], z[near])
            out = np.minimum(out, sd)
        return out

    def bounds(self) -> tuple[float, float, float, float]:
        b = np.array([sh.bounds() for sh in self.shapes])
        return (float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max()))


@dataclass
class Dilated(Shape):
    """The shape grown by `by_mm` (an effusion rim, a wall around a chamber)."""

    shape: Shape
    by_mm: float
    edge_mm: float = 0.0

    def signed_distance(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        if isinstance(self.shape, Union):
            # exact wherever the dilated shape's edge ramp can be, cheaper elsewhere
            horizon = 2.0 * (self.by_mm + self.edge_mm) + 2.0
            return self.shape.signed_distance(x, z, horizon_mm=horizon) - self.by_mm
        return self.shape.signed_distance(x, z) - self.by_mm

    def bounds(self) -> tuple[float, float, float, float]:
        x0, z0, x1, z1 = self.shape.bounds()
        d = self.by_mm + self.edge_mm
        return (x0 - d, z0 - d, x1 + d, z1 + d)
