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
    # float32 trigonometry is vectorised (SIMD) and ~15x faster than float64; phases stay below
    # ~1e3 rad for any body-sized coordinates, so the float32 error is < 1e-4.
    xf = np.asarray(x, dtype=np.float32)
    zf = np.asarray(z, dtype=np.float32)
    kx = (k * np.cos(theta)).astype(np.float32)
    kz = (k * np.sin(theta)).astype(np.float32)
    ph = phase.astype(np.float32)
    out = np.zeros(np.broadcast(xf, zf).shape, dtype=np.float32)
    for i in range(n_waves):
        arg = xf * kx[i] + zf * kz[i]
        arg += ph[i]
        out += np.cos(arg, out=arg)
    return out.astype(np.float64) * np.sqrt(2.0 / n_waves)


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
        dx, dz = x - self.cx, z - self.cz
        if self.angle_deg == 0:
            return dx * (1.0 / self.rx), dz * (1.0 / self.rz)
        a = np.deg2rad(self.angle_deg)
        c, s = np.cos(a), np.sin(a)
        u = dx * (c / self.rx) + dz * (s / self.rx)
        v = dz * (c / self.rz) - dx * (s / self.rz)
        return u, v

    def radius(self, phi: np.ndarray) -> np.ndarray:
        r = np.ones_like(phi)
        for k, amp, phase in self.harmonics:
            r = r + amp * np.cos(k * phi + phase)
        for center, height, width in self.spikes:
            d = np.mod(phi - center + np.pi, 2 * np.pi) - np.pi  # wrapped to [-pi, pi)
            r = r + height * np.exp(-((d / width) ** 2))
        return r

    def signed_distance(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        u, v = self._local(np.asarray(x, dtype=np.float64), np.asarray(z, dtype=np.float64))
        rho = np.sqrt(u * u + v * v)  # not np.hypot: ~7x slower and overflow cannot happen here
        if not self.harmonics and not self.spikes:  # plain ellipse: no angle needed
            return (rho - 1.0) * 0.5 * (self.rx + self.rz)
        # float32 arctan2/cos are SIMD-vectorised (~10x faster); 1e-7 rad is far below a pixel
        phi = np.arctan2(v.astype(np.float32), u.astype(np.float32))
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


def _points_in_bounds(
    x: np.ndarray, z: np.ndarray, bounds: tuple[float, float, float, float]
) -> np.ndarray | None:
    """Indices of the points inside an (xmin, zmin, xmax, zmax) box; None when the box is unbounded."""
    xmin, zmin, xmax, zmax = bounds
    mask = None
    for arr, lo, hi in ((x, xmin, xmax), (z, zmin, zmax)):
        if np.isfinite(lo):
            m = arr >= lo
            mask = m if mask is None else mask & m
        if np.isfinite(hi):
            m = arr <= hi
            mask = m if mask is None else mask & m
    return None if mask is None else np.flatnonzero(mask)


@dataclass
class TissueModel:
    """Background tissue plus shapes painted over it in order (later layers win)."""

    background: Tissue
    layers: list[Layer] = field(default_factory=list)

    def add(self, shape: Shape, tissue: Tissue) -> TissueModel:
        self.layers.append(Layer(shape, tissue))
        return self

    def properties(self, x: np.ndarray, z: np.ndarray) -> TissueProps:
        """Properties at points (any broadcastable shapes); later layers are painted over earlier ones.

        Each layer only touches the points inside its bounding box where its soft-edge weight is
        positive (gathered by index), and evaluates its texture only there: phantoms have tens of
        small layers, so this is what keeps a 100k-point query in the millisecond range.
        """
        x = np.asarray(x, dtype=np.float64)
        z = np.asarray(z, dtype=np.float64)
        x, z = np.broadcast_arrays(x, z)
        shape = x.shape
        xf, zf = x.ravel(), z.ravel()
        echo = self.background.echogenicity_field(xf, zf)
        att = np.full(xf.shape, self.background.attenuation_db_cm_mhz, dtype=np.float64)
        label = np.full(xf.shape, self.background.label or 0, dtype=np.uint8)
        for layer in self.layers:
            idx = _points_in_bounds(xf, zf, layer.shape.bounds())
            if idx is not None and idx.size == 0:
                continue
            xs, zs = (xf, zf) if idx is None else (xf[idx], zf[idx])
            w = layer.shape.weight(xs, zs)
            hit = w > 0
            if not hit.all():
                if not hit.any():
                    continue
                sel = np.flatnonzero(hit)
                idx = sel if idx is None else idx[sel]
                xs, zs, w = xs[sel], zs[sel], w[sel]
            if idx is None:
                idx = slice(None)
            t = layer.tissue
            # Blend in dB so soft (indistinct) edges fade smoothly; clamp the anechoic floor.
            e_layer = np.maximum(t.echogenicity_field(xs, zs), ANECHOIC_DB)
            e_old = np.maximum(echo[idx], ANECHOIC_DB)
            echo[idx] = e_old + w * (e_layer - e_old)
            a_old = att[idx]
            att[idx] = a_old + w * (t.attenuation_db_cm_mhz - a_old)
            if t.label is not None:
                lab = label[idx]
                lab[w >= 0.5] = t.label
                label[idx] = lab
        return TissueProps(echo.reshape(shape), att.reshape(shape), label.reshape(shape))

    def labels(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Only the mask labels of `properties` (uint8): skips textures and unlabelled layers."""
        x = np.asarray(x, dtype=np.float64)
        z = np.asarray(z, dtype=np.float64)
        x, z = np.broadcast_arrays(x, z)
        xf, zf = x.ravel(), z.ravel()
        label = np.full(xf.shape, self.background.label or 0, dtype=np.uint8)
        for layer in self.layers:
            if layer.tissue.label is None:
                continue
            idx = _points_in_bounds(xf, zf, layer.shape.bounds())
            if idx is None:
                label[layer.shape.weight(xf, zf) >= 0.5] = layer.tissue.label
            elif idx.size:
                label[idx[layer.shape.weight(xf[idx], zf[idx]) >= 0.5]] = layer.tissue.label
        return label.reshape(x.shape)
