"""Extra shapes the phantoms need beyond `sonofm.sim.tissue`: intersections, dot clouds, arcs;
`moved` translates any of them (a probe moved along the skin).

Kept as `Shape` subclasses (signed distance in mm, negative inside) so `TissueModel` paints them
like any other layer and the beam grid and the pixel grid see exactly the same geometry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from sonofm.sim.tissue import Band, Polygon, Shape, StarShape, Tube


@dataclass
class Intersection(Shape):
    """Points inside every one of `shapes` (max of signed distances): clips debris to a cyst."""

    shapes: Sequence[Shape]
    edge_mm: float = 0.0

    def signed_distance(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        d = self.shapes[0].signed_distance(x, z)
        for s in self.shapes[1:]:
            d = np.maximum(d, s.signed_distance(x, z))
        return d

    def bounds(self) -> tuple[float, float, float, float]:
        bs = np.array([s.bounds() for s in self.shapes], dtype=np.float64)
        return (bs[:, 0].max(), bs[:, 1].max(), bs[:, 2].min(), bs[:, 3].min())


@dataclass
class Union(Shape):
    """Points inside any of `shapes` (min of signed distances)."""

    shapes: Sequence[Shape]
    edge_mm: float = 0.0

    def signed_distance(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        d = self.shapes[0].signed_distance(x, z)
        for s in self.shapes[1:]:
            d = np.minimum(d, s.signed_distance(x, z))
        return d

    def bounds(self) -> tuple[float, float, float, float]:
        bs = np.array([s.bounds() for s in self.shapes], dtype=np.float64)
        return (bs[:, 0].min(), bs[:, 1].min(), bs[:, 2].max(), bs[:, 3].max())


@dataclass
class Dots(Shape):
    """A cloud of small discs (calcifications, micro-cysts, follicles) painted as ONE layer.

    One layer instead of one per dot keeps `TissueModel.properties` fast: the bounding-box test
    runs once and each dot is evaluated only on the points near it.
    """

    centers: np.ndarray  # (N, 2) of (x, z) mm
    radii: np.ndarray  # (N,) mm
    edge_mm: float = 0.0

    def __post_init__(self) -> None:
        self.centers = np.asarray(self.centers, dtype=np.float64).reshape(-1, 2)
        self.radii = np.broadcast_to(np.asarray(self.radii, dtype=np.float64), (len(self.centers),)).copy()

    def signed_distance(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        z = np.asarray(z, dtype=np.float64)
        x, z = np.broadcast_arrays(x, z)
        d = np.full(x.shape, np.inf)
        reach = float(self.radii.max(initial=0.0)) + self.edge_mm + 1.0
        for (cx, cz), r in zip(self.centers, self.radii, strict=True):
            near = (np.abs(x - cx) < reach) & (np.abs(z - cz) < reach)
            if near.any():
                d[near] = np.minimum(d[near], np.hypot(x[near] - cx, z[near] - cz) - r)
        # far points: any positive distance larger than the edge ramp keeps them outside
        return np.where(np.isinf(d), reach, d)

    def bounds(self) -> tuple[float, float, float, float]:
        if len(self.centers) == 0:
            return (np.inf, np.inf, -np.inf, -np.inf)
        pad = self.radii.max() + self.edge_mm
        lo = self.centers.min(axis=0) - pad
        hi = self.centers.max(axis=0) + pad
        return (lo[0], lo[1], hi[0], hi[1])


def star_points(shape: StarShape, phi: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """World (x, z) points on a StarShape's contour at local angles `phi` (radius times `scale`)."""
    r = shape.radius(phi) * scale
    u, v = r * np.cos(phi), r * np.sin(phi)
    a = np.deg2rad(shape.angle_deg)
    lx, lz = u * shape.rx, v * shape.rz
    x = shape.cx + np.cos(a) * lx - np.sin(a) * lz
    z = shape.cz + np.sin(a) * lx + np.cos(a) * lz
    return np.stack([x, z], axis=-1)


def star_local_to_world(shape: StarShape, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Map normalised local coordinates (unit circle = the plain ellipse) to world (x, z)."""
    a = np.deg2rad(shape.angle_deg)
    lx, lz = np.asarray(u) * shape.rx, np.asarray(v) * shape.rz
    x = shape.cx + np.cos(a) * lx - np.sin(a) * lz
    z = shape.cz + np.sin(a) * lx + np.cos(a) * lz
    return np.stack([x, z], axis=-1)


@dataclass
class Arc(Shape):
    """An annulus (ring) around (cx, cz) between radii r_in and r_out: body-wall layers under a
    curvilinear probe, vessel walls, the gallbladder wall."""

    cx: float
    cz: float
    r_in: float
    r_out: float
    edge_mm: float = 0.0

    def signed_distance(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        r = np.hypot(np.asarray(x, dtype=np.float64) - self.cx, np.asarray(z, dtype=np.float64) - self.cz)
        return np.maximum(self.r_in - r, r - self.r_out)

    def bounds(self) -> tuple[float, float, float, float]:
        r = self.r_out + self.edge_mm
        return (self.cx - r, self.cz - r, self.cx + r, self.cz + r)


def tight_bounds(shape: Shape, step_mm: float = 0.25) -> tuple[float, float, float, float]:
    """(xmin, zmin, xmax, zmax) of the points inside `shape`, on a grid of `step_mm`.

    `Shape.bounds()` is a conservative square for rotated or star shapes; fitting an elongated
    organ or lesion in the field of view needs its real extent.
    """
    x0, z0, x1, z1 = shape.bounds()
    xs = np.arange(x0, x1 + step_mm, step_mm)
    zs = np.arange(z0, z1 + step_mm, step_mm)
    inside = shape.inside(xs[None, :], zs[:, None])
    if not inside.any():
        return (x0, z0, x1, z1)
    cols = np.flatnonzero(inside.any(axis=0))
    rows = np.flatnonzero(inside.any(axis=1))
    return (
        float(xs[cols[0]] - step_mm),
        float(zs[rows[0]] - step_mm),
        float(xs[cols[-1]] + step_mm),
        float(zs[rows[-1]] + step_mm),
    )


def moved(shape: Shape, dx: float, dz: float) -> Shape:
    """A copy of `shape` translated by (dx, dz) mm (the probe moved the other way)."""
    if dx == 0 and dz == 0:
        return shape
    if isinstance(shape, StarShape):
        return replace(shape, cx=shape.cx + dx, cz=shape.cz + dz)
    if isinstance(shape, Polygon):
        return Polygon(shape.vertices + np.array([dx, dz]), shape.edge_mm)
    if isinstance(shape, Dots):
        return Dots(shape.centers + np.array([dx, dz]), shape.radii, shape.edge_mm)
    if isinstance(shape, Tube):
        return Tube(shape.points + np.array([dx, dz]), shape.radius, shape.edge_mm)
    if isinstance(shape, Band):
        return Band(
            [x + dx for x in shape.top_x],
            [z + dz for z in shape.top_z],
            [x + dx for x in shape.bottom_x],
            [z + dz for z in shape.bottom_z],
            shape.edge_mm,
        )
    if isinstance(shape, Intersection):
        return Intersection([moved(s, dx, dz) for s in shape.shapes], shape.edge_mm)
    if isinstance(shape, Union):
        return Union([moved(s, dx, dz) for s in shape.shapes], shape.edge_mm)
    if isinstance(shape, Arc):
        return Arc(shape.cx + dx, shape.cz + dz, shape.r_in, shape.r_out, shape.edge_mm)
    raise TypeError(f"cannot move a {type(shape).__name__}")
