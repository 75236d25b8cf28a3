"""Tissue models: what the simulated body is made of, as functions of physical position.

A phantom is a `TissueModel`: a background tissue plus shapes painted on top in order. The physics
samples it at beam sample points (to place scatterers and integrate attenuation) and at output pixel
centres (for exact masks), so everything here is a pure function of (x, z) in millimetres and works
on arrays of any shape. Coordinates: `x` lateral (0 = probe centre), `z` depth (0 = skin, + down).

Written here rather than taken from a library because nothing in numpy/scipy describes anatomy;
this is the part of the simulator that is the point of the project.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# Backscatter below this is treated as "no scatterers" (fluid); keeps log() finite downstream.
ANECHOIC_DB = -60.0


@dataclass(frozen=True)
class Tissue:
    """Acoustic properties of one tissue type.

    echogenicity_db: mean backscatter amplitude relative to reference parenchyma (0 dB).
    attenuation_db_cm_mhz: one-way attenuation slope; the physics doubles it for the round trip.
    label: mask label id painted where this tissue wins (None keeps the label underneath).
    texture_db: std of a smooth spatial variation of echogenicity (heterogeneous tissue).
    """

    name: str
    echogenicity_db: float = 0.0
    attenuation_db_cm_mhz: float = 0.6
    label: int | None = None
    texture_db: float = 0.0
    texture_scale_mm: float = 2.0
    texture_seed: int = 0

    def echogenicity_field(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Echogenicity in dB at the points, including the deterministic texture."""
        base = np.full(np.broadcast(x, z).shape, self.echogenicity_db, dtype=np.float64)
        if self.texture_db <= 0:
            return base
        return base + self.texture_db * smooth_field(x, z, self.texture_scale_mm, self.texture_seed)


def smooth_field(x: np.ndarray, z: np.ndarray, scale_mm: float, seed: int, n_waves: int = 12) -> np.ndarray:
    """A zero-mean, unit-variance smooth random field defined at any point (sum of plane waves).

    A function of position (not a sampled grid) so the beam grid and the pixel grid see the same
    texture.
    """
    rng = np.random.default_rng(seed)
    theta = rng.uniform(0, np.pi, n_waves)
    k = 2 * np.pi / scale_mm * rng.uniform(0.5, 1.5, n_waves)
    phase = rng.uniform(0, 2 * np.pi, n_waves)
    out = np.zeros(np.broadcast(x, z).shape, dtype=np.float64)
    for i in range(n_waves):
        out += np.cos(k[i] * (np.cos(theta[i]) * x + np.sin(theta[i]) * z) + phase[i])
    return out * np.sqrt(2.0 / n_waves)


def _smoothstep_inside(signed_dist_mm: np.ndarray, edge_mm: float) -> np.ndarray:
    """Weight 1 inside (negative distance), 0 outside, linear ramp of width edge_mm across the edge."""
    if edge_mm <= 0:
        return (signed_dist_mm <= 0).astype(np.float64)
    return np.clip(0.5 - signed_dist_mm / edge_mm, 0.0, 1.0)


class Shape:
    """A region of the image plane. Subclasses give a signed distance (mm, negative inside)."""

    edge_mm: float = 0.0

    def signed_distance(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise TypeError(f"{type(self).__name__} must define signed_distance")

    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, zmin, xmax, zmax) enclosing the shape, used to skip far-away points."""
        return (-np.inf, -np.inf, np.inf, np.inf)

    def weight(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        return _smoothstep_inside(self.signed_distance(x, z), self.edge_mm)

    def inside(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        return self.signed_distance(x, z) <= 0


@dataclass
class StarShape(Shape):
    """An ellipse whose radius is modulated with angle: lobulated, microlobulated, spiculated, angular.

    r(phi) = 1 + sum_k amp_k cos(k phi + phase_k) + sum_s height_s * exp(-(dphi_s / width_s)^2)
    in units of the ellipse's own radius. Plain ellipse when both lists are empty. The signed
    distance is approximate (radial), good enough for soft edges of a fraction of a millimetre.
    """

    cx: float
    cz: float
    rx: float
    rz: float
    angle_deg: float = 0.0
    harmonics: Sequence[tuple[int, float, float]] = ()
    spikes: Sequence[tuple[float, float, float]] = ()
    edge_mm: float = 0.0

    def _local(self, x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a = np.deg2rad(self.angle_deg)
        dx, dz = x - self.cx, z - self.cz
        u = (np.cos(a) * dx + np.sin(a) * dz) / self.rx
        v = (-np.sin(a) * dx + np.cos(a) * dz) / self.rz
        return u, v

    def radius(self, phi: np.ndarray) -> np.ndarray:
        r = np.ones_like(phi)
        for k, amp, phase in self.harmonics:
            r = r + amp * np.cos(k * phi + phase)
        for center, height, width in self.spikes:
            d = np.angle(np.exp(1j * (phi - center)))
            r = r + height * np.exp(-((d / width) ** 2))
        return r

    def signed_distance(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        u, v = self._local(np.asarray(x, dtype=np.float64), np.asarray(z, dtype=np.float64))
        rho = np.hypot(u, v)
        phi = np.arctan2(v, u)
        return (rho - self.radius(phi)) * 0.5 * (self.rx + self.rz)

    def max_radius(self) -> float:
        extra = sum(abs(a) for _, a, _ in self.harmonics) + sum(max(h, 0.0) for _, h, _ in self.spikes)
        return (1.0 + extra) * max(self.rx, self.rz) + self.edge_mm

    def bounds(self) -> tuple[float, float, float, float]:
        r = self.max_radius()
        return (self.cx - r, self.cz - r, self.cx + r, self.cz + r)


def Ellipse(
    cx: float, cz: float, rx: float, rz: float, angle_deg: float = 0.0, edge_mm: float = 0.0
) -> StarShape:
    """A plain ellipse (semi-axes rx lateral, rz axial before rotation)."""
    return StarShape(cx, cz, rx, rz, angle_deg=angle_deg, edge_mm=edge_mm)


@dataclass
class Polygon(Shape):
    """A closed polygon (vertices in mm), e.g. angular margins or chamber outlines."""

    vertices: np.ndarray
    edge_mm: float = 0.0

    def __post_init__(self) -> None:
        self.vertices = np.asarray(self.vertices, dtype=np.float64)
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 2 or len(self.vertices) < 3:
            raise ValueError("Polygon needs an (N>=3, 2) array of (x, z) vertices")

    def signed_distance(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        z = np.asarray(z, dtype=np.float64)
        shape = np.broadcast(x, z).shape
        px, pz = np.broadcast_to(x, shape).ravel(), np.broadcast_to(z, shape).ravel()
        v = self.vertices
        w = np.roll(v, -1, axis=0)
        inside = np.zeros(px.shape, dtype=bool)
        dist2 = np.full(px.shape, np.inf)
        for (x0, z0), (x1, z1) in zip(v, w, strict=True):
            # even-odd rule crossing test
            cond = (z0 > pz) != (z1 > pz)
            with np.errstate(divide="ignore", invalid="ignore"):
                xc = x0 + (pz - z0) * (x1 - x0) / (z1 - z0)
            inside ^= cond & (px < xc)
            # distance to the segment
            ex, ez = x1 - x0, z1 - z0
            seg2 = ex * ex + ez * ez
            t = np.clip(((px - x0) * ex + (pz - z0) * ez) / seg2 if seg2 > 0 else 0.0, 0.0, 1.0)
            dist2 = np.minimum(dist2, (px - x0 - t * ex) ** 2 + (pz - z0 - t * ez) ** 2)
        d = np.sqrt(dist2)
        return np.where(inside, -d, d).reshape(shape)

    def bounds(self) -> tuple[float, float, float, float]:
        lo = self.vertices.min(axis=0) - self.edge_mm
        hi = self.vertices.max(axis=0) + self.edge_mm
        return (lo[0], lo[1], hi[0], hi[1])


@dataclass
class Band(Shape):
    """A layer between two depth curves z_top(x) < z < z_bottom(x): skin, fat, muscle, walls.

    Curves are given as sample points (xs, zs) and interpolated linearly (held constant outside).
    """

    top_x: Sequence[float]
    top_z: Sequence[float]
    bottom_x: Sequence[float]
    bottom_z: Sequence[float]
    edge_mm: float = 0.0

    @classmethod
    def flat(cls, z_top: float, z_bottom: float, edge_mm: float = 0.0) -> Band:
        return cls([0.0], [z_top], [0.0], [z_bottom], edge_mm)

    def signed_distance(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        z = np.asarray(z, dtype=np.float64)
        zt = np.interp(x, self.top_x, self.top_z)
        zb = np.interp(x, self.bottom_x, self.bottom_z)
        return np.maximum(zt - z, z - zb)

    def bounds(self) -> tuple[float, float, float, float]:
        return (-np.inf, min(self.top_z) - self.edge_mm, np.inf, max(self.bottom_z) + self.edge_mm)


@dataclass
class Tube(Shape):
    """Points within `radius` of a polyline: a vessel or duct cut along its length."""

    points: np.ndarray
    radius: float
    edge_mm: float = 0.0

    def __post_init__(self) -> None:
        self.points = np.asarray(self.points, dtype=np.float64)

    def signed_distance(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        z = np.asarray(z, dtype=np.float64)
        dist2 = np.full(np.broadcast(x, z).shape, np.inf)
        for (x0, z0), (x1, z1) in zip(self.points[:-1], self.points[1:], strict=True):
            ex, ez = x1 - x0, z1 - z0
            seg2 = ex * ex + ez * ez
            t = np.clip(((x - x0) * ex + (z - z0) * ez) / seg2 if seg2 > 0 else 0.0, 0.0, 1.0)
            dist2 = np.minimum(dist2, (x - x0 - t * ex) ** 2 + (z - z0 - t * ez) ** 2)
        return np.sqrt(dist2) - self.radius

    def bounds(self) -> tuple[float, float, float, float]:
        lo = self.points.min(axis=0) - self.radius - self.edge_mm
        hi = self.points.max(axis=0) + self.radius + self.edge_mm
        return (lo[0], lo[1], hi[0], hi[1])


@dataclass
class Layer:
    shape: Shape
    tissue: Tissue


@dataclass
class TissueProps:
    """Tissue properties sampled at points: the inputs of the B-mode physics."""

    echogenicity_db: np.ndarray  # backscatter amplitude, dB re reference parenchyma
    attenuation: np.ndarray  # dB/cm/MHz, one way
    label: np.ndarray  # uint8 mask label ids

    @property
    def amplitude(self) -> np.ndarray:
        """Linear backscatter amplitude (0 where anechoic)."""
        amp = 10.0 ** (self.echogenicity_db / 20.0)
        return np.where(self.echogenicity_db <= ANECHOIC_DB, 0.0, amp)


@dataclass
class TissueModel:
    """Background tissue plus shapes painted over it in order (later layers win)."""

    background: Tissue
    layers: list[Layer] = field(default_factory=list)

    def add(self, shape: Shape, tissue: Tissue) -> TissueModel:
        self.layers.append(Layer(shape, tissue))
        return self

    def properties(self, x: np.ndarray, z: np.ndarray) -> TissueProps:
        x = np.asarray(x, dtype=np.float64)
        z = np.asarray(z, dtype=np.float64)
        x, z = np.broadcast_arrays(x, z)
        echo = self.background.echogenicity_field(x, z)
        att = np.full(x.shape, self.background.attenuation_db_cm_mhz, dtype=np.float64)
        label = np.full(x.shape, self.background.label or 0, dtype=np.uint8)
        for layer in self.layers:
            xmin, zmin, xmax, zmax = layer.shape.bounds()
            near = (x >= xmin) & (x <= xmax) & (z >= zmin) & (z <= zmax)
            if not near.any():
                continue
            xs, zs = x[near], z[near]
            w = layer.shape.weight(xs, zs)
            hit = w > 0
            if not hit.any():
                continue
            t = layer.tissue
            e_layer = t.echogenicity_field(xs, zs)
            # Blend in dB so soft (indistinct) edges fade smoothly; clamp the anechoic floor.
            e_old = np.maximum(echo[near], ANECHOIC_DB)
            echo[near] = np.where(hit, (1 - w) * e_old + w * np.maximum(e_layer, ANECHOIC_DB), echo[near])
            att[near] = np.where(hit, (1 - w) * att[near] + w * t.attenuation_db_cm_mhz, att[near])
            if t.label is not None:
                lab = label[near]
                lab[w >= 0.5] = t.label
                label[near] = lab
        return TissueProps(echo, att, label)
