# SPDX-License-Identifier: Apache-2.0
"""Breast lesion phantoms rendered by PyMUST's SIMUS, written as a sonofm dataset directory.

Helper of ``benchmarks/cross_simulator.py``. sonofm's own simulator draws speckle, PSF and
attenuation with its own shortcuts; a model that learned those shortcuts rather than what an
anechoic cyst or a shadowing calcification looks like should lose accuracy on images made by a
simulator that shares none of its code. SIMUS (Garcia, the MUST toolbox) computes the RF echoes
of point scatterers for a real array model in the frequency domain; the image is then formed
the way a scanner does: I/Q demodulation, time-gain compensation and delay-and-sum with pymust's
own functions, then envelope, depth gain and log compression here.

What is modelled, and how (an honest list, also written into the dataset card):

* **Speckle**: uniform random scatterers with Gaussian reflection coefficients (so the envelope is
  Rayleigh where the density is high enough), about 8 per mm^2: partially developed speckle, chosen
  so that a 64 px image costs seconds. A slow +-1.5 dB texture modulates the background.
* **Echogenicity**: the lesion scales the coefficients of the scatterers inside it (amplitude x0.3
  hypoechoic, x1 isoechoic, x3 hyperechoic); an anechoic cyst has no scatterers. An isoechoic
  lesion is only visible through its thin hypoechoic halo (x0.25, ~1 mm).
* **Calcifications**: strong point reflectors (x6-x10 the background RMS); micro: a few isolated
  dots, macro: a dense clump.
* **Posterior features are not modelled by SIMUS**: its attenuation is one coefficient for the
  whole medium. They are imposed on the scatterers instead, by a straight-ray (0 degree plane wave)
  approximation: every scatterer below the lesion gets the two-way amplitude change of the excess
  attenuation along the vertical path through the lesion (fluid ~0 dB/cm/MHz against 0.75 in tissue:
  enhancement; a macrocalcification removes ~95% of the amplitude behind it: shadowing). Refraction,
  edge shadows and reverberation are absent.
* **Margins and shapes**: a polar contour r(theta) around an ellipse: smooth (circumscribed),
  narrow radial spikes (spiculated), small regular lobes (microlobulated), a ~1.5 mm soft edge
  (indistinct); low-order random harmonics give an irregular shape. Orientation (wider-than-tall,
  taller-than-wide) is measured on the lesion's extent the way sonofm's simulator tags it.
* **Probe and image formation**: L11-5v's geometry and element model (128 elements, 0.3 mm
  pitch, 38.4 mm aperture) driven at 3.5 MHz instead of 7.6 MHz, one 0 degree plane-wave transmit,
  pymust's I/Q demodulation, TGC and delay-and-sum with receive f-number 1.5, then a smooth depth
  gain fitted to the row medians and log compression. The lower frequency makes the speckle grain
  about one pixel of a 64 px image (as in sonofm's images; at 7.6 MHz it would average away) and
  keeps SIMUS at seconds per image on one core. With one unfocused transmit the clutter floor is
  high: an anechoic cyst measures about -13 dB below the tissue (a focused scanner: -30 dB or more),
  so it is dark grey under a 35-50 dB display range, not black.
* **Region**: breast (linear array, BI-RADS descriptors for shape, orientation, margin,
  echogenicity, posterior features and calcifications; a skin line over homogeneous tissue).
  Vascularity is not written: a B-mode image cannot show it.

Determinism: everything random flows from (seed, case index), and SIMUS runs with one BLAS
thread, so the same seed gives the same images on one machine.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

TOOL = "benchmarks/pymust_phantoms.py"
RENDER_VERSION = 1  # bump when phantoms or image formation change: a cached set is then refused
SOURCE = "pymust"
REGION = "breast"
KINDS = ("cyst", "hypoechoic", "hyperechoic", "isoechoic_halo", "macrocalcified", "microcalcified")
SHAPES = ("round", "oval_wide", "oval_tall", "irregular")
# Lesion amplitude gain (reflection coefficient scale) per kind; the cyst has no scatterers at all.
GAIN = {
    "cyst": 0.0,
    "hypoechoic": 0.3,
    "hyperechoic": 3.0,
    "isoechoic_halo": 1.0,
    "macrocalcified": 0.3,
    "microcalcified": 0.3,
}
ECHO_TAG = {
    "cyst": "anechoic",
    "hypoechoic": "hypoechoic",
    "hyperechoic": "hyperechoic",
    "isoechoic_halo": "isoechoic",
    "macrocalcified": "hypoechoic",
    "microcalcified": "hypoechoic",
}
MARGINS_OF = {  # margins a kind may take (a cyst and a haloed lesion are circumscribed)
    "cyst": ("circumscribed",),
    "hypoechoic": ("circumscribed", "spiculated", "microlobulated", "indistinct"),
    "hyperechoic": ("circumscribed", "indistinct"),
    "isoechoic_halo": ("circumscribed",),
    "macrocalcified": ("circumscribed", "spiculated", "indistinct"),
    "microcalcified": ("circumscribed", "spiculated", "microlobulated", "indistinct"),
}
TISSUE_ATTENUATION = 0.75  # dB/cm/MHz (breast parenchyma)
FLUID_ATTENUATION = 0.0  # water-like cyst content: ~0.002 dB/cm/MHz
SHADOW_AMPLITUDE = 0.05  # what is left behind a macrocalcification (-26 dB)


# ----------------------------------------------------------------------------- probe


@dataclass(frozen=True)
class Probe:
    """The array and medium handed to SIMUS (see the module docstring for why these values)."""

    fc_hz: float = 3.5e6
    n_elements: int = 128
    pitch_m: float = 0.3e-3
    kerf_m: float = 0.03e-3
    bandwidth_pct: float = 77.0
    fnumber: float = 1.5
    attenuation_db_cm_mhz: float = TISSUE_ATTENUATION
    c_m_s: float = 1540.0

    @property
    def aperture_mm(self) -> float:
        return self.n_elements * self.pitch_m * 1e3

    def param(self) -> Any:
        """A pymust `Param` for this probe: L11-5v's geometry and element model at our frequency."""
        import pymust

        p = pymust.getparam("L11-5v")
        p.fc, p.Nelements, p.pitch = self.fc_hz, self.n_elements, self.pitch_m
        p.kerf = self.kerf_m
        p.width = self.pitch_m - self.kerf_m
        p.bandwidth, p.c, p.fnumber = self.bandwidth_pct, self.c_m_s, self.fnumber
        p.attenuation = self.attenuation_db_cm_mhz
        p.fs = 4 * self.fc_hz
        return p


# ----------------------------------------------------------------------------- one case


@dataclass(frozen=True)
class LesionCase:
    """One phantom: the lesion's geometry and kind plus the display settings (all in mm / dB)."""

    index: int
    seed: int
    kind: str
    shape: str  # round / oval_wide / oval_tall / irregular: the drawn contour
    margin: str
    centre_mm: tuple[float, float]  # (x, z): x = 0 at the array centre, z = depth
    semi_axes_mm: tuple[float, float]  # (half width, half height) of the base ellipse
    depth_mm: float  # imaged depth
    harmonics: tuple[tuple[int, float, float], ...] = ()  # (order, relative amplitude, phase)
    spikes: tuple[tuple[float, float], ...] = ()  # (angle rad, relative length)
    calcs_mm: tuple[tuple[float, float], ...] = ()  # point reflectors (x, z)
    calc_amplitude: float = 0.0
    shadow_half_width_mm: float = 0.0  # lateral half width of a macrocalcification's shadow
    background_grey: float = 0.45  # grey level [0, 1] of the background's median
    dynamic_range_db: float = 40.0
    texture_seed: int = 0

    @property
    def id(self) -> str:
        return f"pymust-{self.seed}-{self.index:04d}"

    @property
    def halo(self) -> bool:
        return self.kind == "isoechoic_halo"

    @property
    def edge_mm(self) -> float:
        """Width of the lesion's soft edge: ~1.5 mm for an indistinct margin, sharp otherwise."""
        return 1.5 if self.margin == "indistinct" else 0.1


def _ellipse_radius(a: float, b: float, theta: np.ndarray) -> np.ndarray:
    return a * b / np.sqrt((b * np.cos(theta)) ** 2 + (a * np.sin(theta)) ** 2)


def contour_radius(case: LesionCase, theta: np.ndarray) -> np.ndarray:
    """r(theta) in mm of the lesion boundary around its centre (theta from +x towards +z)."""
    a, b = case.semi_axes_mm
    r = _ellipse_radius(a, b, theta)
    scale = np.ones_like(theta)
    for order, amp, phase in case.harmonics:
        scale = scale + amp * np.cos(order * theta + phase)
    if case.margin == "microlobulated":
        scale = scale + 0.07 * np.abs(np.cos(7.0 * theta + case.index))
    for angle, length in case.spikes:
        d = np.angle(np.exp(1j * (theta - angle)))  # wrapped angular distance
        scale = scale + length * np.clip(1.0 - np.abs(d) / 0.07, 0.0, None)  # narrow triangular spike
    return r * scale


def lesion_weight(case: LesionCase, x_mm: np.ndarray, z_mm: np.ndarray) -> np.ndarray:
    """How much of the lesion is at each point, in [0, 1] (1 inside, soft over `edge_mm`)."""
    dx, dz = x_mm - case.centre_mm[0], z_mm - case.centre_mm[1]
    rho, theta = np.hypot(dx, dz), np.arctan2(dz, dx)
    signed = rho - contour_radius(case, theta)  # < 0 inside (radial distance, mm)
    return 1.0 / (1.0 + np.exp(np.clip(signed / (case.edge_mm / 4.0), -50, 50)))


def halo_weight(case: LesionCase, x_mm: np.ndarray, z_mm: np.ndarray, width_mm: float = 1.0) -> np.ndarray:
    """1 on a ring of `width_mm` just outside the boundary (the halo), 0 elsewhere."""
    if not case.halo:
        return np.zeros(np.broadcast(x_mm, z_mm).shape)
    dx, dz = x_mm - case.centre_mm[0], z_mm - case.centre_mm[1]
    rho, theta = np.hypot(dx, dz), np.arctan2(dz, dx)
    signed = rho - contour_radius(case, theta)
    return ((signed > -0.2) & (signed < width_mm)).astype(np.float64)


def lesion_mask(case: LesionCase, x_mm: np.ndarray, z_mm: np.ndarray) -> np.ndarray:
    return lesion_weight(case, x_mm, z_mm) >= 0.5


def _posterior_tags(case: LesionCase) -> list[str]:
    if case.kind == "cyst":
        return ["enhancement"]
    if case.kind == "macrocalcified":
        return ["shadowing"]
    return []


def _shape_tags(case: LesionCase, width_mm: float, height_mm: float) -> list[str]:
    """The contour tag plus the orientation measured in the image (as sonofm's simulator tags it)."""
    from sonofm.sim.phantoms.lesions import orientation_tag

    contour = {"round": "round", "oval_wide": "oval", "oval_tall": "oval", "irregular": "irregular"}
    tags = [contour[case.shape]]
    o = orientation_tag(width_mm, height_mm)
    if o is not None and tags[0] != "round":
        tags.append(o)
    return tags


def case_tags(case: LesionCase, width_mm: float, height_mm: float) -> dict[str, list[str]]:
    """The attribute tags this image shows (PRESENT findings), in sonofm's vocabulary."""
    internal = ["cystic"] if case.kind == "cyst" else ["solid"]
    if case.kind == "macrocalcified":
        internal.append("macrocalcifications")
    if case.kind == "microcalcified":
        internal.append("microcalcifications")
    return {
        "diagnosis": ["cyst" if case.kind == "cyst" else "mass"],
        "shape": _shape_tags(case, width_mm, height_mm),
        "margin": [case.margin],
        "echogenicity": [ECHO_TAG[case.kind]],
        "internal": internal,
        "posterior": _posterior_tags(case),
    }


def sample_cases(n: int, seed: int) -> list[LesionCase]:
    """`n` independent cases: kinds and contours balanced (cycled in a seeded order), the rest drawn.

    Size, depth, lateral position, aspect, margin, background grey level and dynamic range vary
    per case; case `i` depends only on (seed, i) and the balanced schedule of its block.
    """
    cases = []
    schedule_rng = np.random.default_rng([seed, 0x5C4E])
    combos = [(k, s) for k in KINDS for s in SHAPES]
    order: list[tuple[str, str]] = []
    while len(order) < n:
        order += [combos[j] for j in schedule_rng.permutation(len(combos))]
    for i in range(n):
        kind, shape = order[i]
        if kind == "cyst" and shape == "irregular":
            shape = "oval_wide"  # simple cysts are smooth; keep the slot, change the contour
        rng = np.random.default_rng([seed, i])
        depth = float(rng.uniform(30.0, 38.0))
        size = float(rng.uniform(3.0, 6.5))  # mean radius (mm)
        if shape == "round":
            a = b = size
        elif shape == "oval_wide":
            r = float(rng.uniform(1.35, 1.8))
            a, b = size * math.sqrt(r), size / math.sqrt(r)
        elif shape == "oval_tall":
            r = float(rng.uniform(1.3, 1.6))
            a, b = size / math.sqrt(r), size * math.sqrt(r)
        else:
            r = float(rng.uniform(1.0, 1.4))
            a, b = size * math.sqrt(r), size / math.sqrt(r)
        margin = str(rng.choice(MARGINS_OF[kind]))
        harmonics: tuple[tuple[int, float, float], ...] = ()
        if shape == "irregular":
            harmonics = tuple(
                (int(o), float(rng.uniform(0.1, 0.2)), float(rng.uniform(0, 2 * np.pi))) for o in (2, 3, 5)
            )
        spikes: tuple[tuple[float, float], ...] = ()
        if margin == "spiculated":
            k = int(rng.integers(6, 11))
            spikes = tuple(
                (float(t), float(rng.uniform(0.35, 0.7))) for t in np.sort(rng.uniform(0, 2 * np.pi, k))
            )
        reach = max(a, b) * (1.7 if spikes else 1.25)
        cx = float(rng.uniform(-8.0, 8.0))
        cz = float(rng.uniform(6.0 + reach, depth - 6.0 - reach)) if depth - 12.0 > 2 * reach else depth / 2
        calcs: tuple[tuple[float, float], ...] = ()
        amp, shadow = 0.0, 0.0
        if kind == "microcalcified":
            m = int(rng.integers(4, 9))
            rr = np.sqrt(rng.uniform(0, 0.6, m)) * min(a, b)
            tt = rng.uniform(0, 2 * np.pi, m)
            calcs = tuple(
                (cx + float(r_) * math.cos(t), cz + float(r_) * math.sin(t))
                for r_, t in zip(rr, tt, strict=True)
            )
            amp = float(rng.uniform(6.0, 10.0))
        elif kind == "macrocalcified":
            half = float(rng.uniform(1.0, 1.8))
            ox, oz = float(rng.uniform(-0.3, 0.3)) * a, float(rng.uniform(-0.3, 0.1)) * b
            m = 40
            calcs = tuple(
                (cx + ox + float(u), cz + oz + float(v))
                for u, v in zip(rng.uniform(-half, half, m), rng.uniform(-0.5, 0.5, m) * half, strict=True)
            )
            amp, shadow = float(rng.uniform(6.0, 10.0)), half
        cases.append(
            LesionCase(
                index=i,
                seed=seed,
                kind=kind,
                shape=shape,
                margin=margin,
                centre_mm=(cx, cz),
                semi_axes_mm=(a, b),
                depth_mm=depth,
                harmonics=harmonics,
                spikes=spikes,
                calcs_mm=calcs,
                calc_amplitude=amp,
                shadow_half_width_mm=shadow,
                background_grey=float(rng.uniform(0.3, 0.55)),
                dynamic_range_db=float(rng.uniform(35.0, 50.0)),
                texture_seed=int(rng.integers(0, 2**31 - 1)),
            )
        )
    return cases


# ----------------------------------------------------------------------------- scatterers


@dataclass
class Phantom:
    """Point scatterers in metres and their reflection coefficients (what SIMUS takes)."""

    x_m: np.ndarray
    z_m: np.ndarray
    rc: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def _excess_path_db(case: LesionCase, x_mm: np.ndarray, z_mm: np.ndarray, fc_mhz: float) -> np.ndarray:
    """Two-way amplitude change (dB) of each point from the lesion above it, along a vertical ray.

    SIMUS attenuates the whole medium with one coefficient; the lesion's own attenuation (a cyst
    ~0, a macrocalcification opaque) is applied here to the scatterers it hides or reveals.
    """
    out = np.zeros_like(x_mm)
    if case.kind == "cyst":
        dz = 0.05
        zs = np.arange(0.0, case.depth_mm + dz, dz)
        # chord of fluid above each point = integral of the lesion weight over depths < z
        xs = np.unique(np.round(x_mm, 1))
        w = lesion_weight(case, xs[:, None], zs[None, :])  # (X, Z)
        chord = np.cumsum(w, axis=1) * dz  # mm of fluid above each depth
        ix = np.searchsorted(xs, np.round(x_mm, 1))
        iz = np.clip((z_mm / dz).astype(int), 0, len(zs) - 1)
        gain_db_per_mm = 2.0 * (TISSUE_ATTENUATION - FLUID_ATTENUATION) * fc_mhz / 10.0
        out = chord[ix, iz] * gain_db_per_mm
    elif case.kind == "macrocalcified" and case.calcs_mm:
        cx = float(np.mean([c[0] for c in case.calcs_mm]))
        bottom = float(np.max([c[1] for c in case.calcs_mm]))
        lateral = np.clip((case.shadow_half_width_mm + 0.3 - np.abs(x_mm - cx)) / 0.6, 0.0, 1.0)
        below = z_mm > bottom + 0.3
        out = np.where(below, lateral * 20.0 * math.log10(SHADOW_AMPLITUDE), 0.0)
    return out


def build_phantom(case: LesionCase, probe: Probe, density_per_mm2: float = 8.0) -> Phantom:
    """Scatterers of one case: speckle background, lesion, halo, calcifications, posterior change."""
    rng = np.random.default_rng([case.seed, case.index, 1])
    width = probe.aperture_mm
    z0 = 0.5  # no scatterer in the array's first half millimetre
    n = int(density_per_mm2 * width * (case.depth_mm - z0))
    x = rng.uniform(-width / 2, width / 2, n)
    z = rng.uniform(z0, case.depth_mm, n)
    rc = rng.standard_normal(n)  # Gaussian coefficients: Rayleigh envelope in developed speckle
    # slow texture (+-1.5 dB): a few random plane waves in log amplitude
    trng = np.random.default_rng(case.texture_seed)
    tex = np.zeros(n)
    for _ in range(4):
        k = trng.uniform(0.15, 0.5) * np.array([math.cos(a := trng.uniform(0, np.pi)), math.sin(a)])
        tex += np.cos(k[0] * x + k[1] * z + trng.uniform(0, 2 * np.pi))
    rc *= 10 ** (1.5 * tex / 2.0 / 20.0)
    skin = z < 2.0  # a bright skin line (every breast image has one)
    rc[skin] *= 3.0
    w = lesion_weight(case, x, z)
    gain = GAIN[case.kind]
    rc *= (1.0 - w) + w * gain
    rc *= 1.0 - 0.75 * halo_weight(case, x, z)
    rc *= 10 ** (_excess_path_db(case, x, z, probe.fc_hz / 1e6) / 20.0)
    keep = np.abs(rc) > 1e-3  # scatterers inside the cyst (or deep in a shadow) cost without echoing
    if gain == 0.0:
        keep &= w < 0.5  # fluid: no scatterer at all inside the contour
    x, z, rc = x[keep], z[keep], rc[keep]
    if case.calcs_mm:
        c = np.asarray(case.calcs_mm, dtype=np.float64)
        amp = case.calc_amplitude * rng.uniform(0.7, 1.0, len(c)) * rng.choice([-1.0, 1.0], len(c))
        x, z, rc = np.r_[x, c[:, 0]], np.r_[z, c[:, 1]], np.r_[rc, amp]
    return Phantom(x * 1e-3, z * 1e-3, rc, {"scatterers": int(len(rc))})


# ----------------------------------------------------------------------------- imaging


def render_envelope(
    phantom: Phantom, probe: Probe, grid_mm: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, dict[str, float]]:
    """SIMUS RF of one 0-degree plane wave -> I/Q -> TGC -> DAS on `grid_mm` -> envelope.

    Returns the envelope (Z, X) and the seconds spent in SIMUS and in the image formation.
    """
    import pymust
    from threadpoolctl import threadpool_limits

    param = probe.param()
    opts = pymust.utils.Options()
    opts.dBThresh = -60.0  # SIMUS skips frequency components below -60 dB: ~15% faster
    delays = pymust.txdelay(param, 0.0)
    with threadpool_limits(limits=1):
        t0 = time.perf_counter()
        rf = pymust.simus(phantom.x_m, phantom.z_m, phantom.rc, delays, param, opts)[0]
        t1 = time.perf_counter()
        iq = pymust.rf2iq(rf, param)
        iq = pymust.tgc(iq)[0]
        xg, zg = np.meshgrid(grid_mm[0] * 1e-3, grid_mm[1] * 1e-3)
        m = pymust.dasmtx(iq, xg, zg, delays, param)
        biq = (m @ iq.flatten(order="F")).reshape(xg.shape, order="F")
        t2 = time.perf_counter()
    return np.abs(biq), {"simus_s": t1 - t0, "beamform_s": t2 - t1}


def square_grid(probe: Probe, size: int, oversample: int = 2) -> tuple[np.ndarray, np.ndarray, float]:
    """Beamforming grid over the square field (side = the aperture) at `oversample` x the image size.

    Like sonofm's linear images: x centred on the array, z from the skin down, isotropic pixels.
    Returns (x_mm, z_mm, output pixel spacing in mm).
    """
    side = probe.aperture_mm
    n = size * oversample
    step = side / n
    centres = (np.arange(n) + 0.5) * step
    return centres - side / 2, centres, side / size


def depth_gain_db(db: np.ndarray, z_mm: np.ndarray, depth_mm: float) -> np.ndarray:
    """A smooth depth-gain curve (dB per row) that flattens the background, as a scanner's TGC does.

    pymust's `tgc` compensates the channel data's exponential decay, but the beamformed image
    still brightens with depth (the f-number opens the receive aperture as depth grows). A
    quadratic fitted to the row medians (robust to a lesion covering less than half a row; the
    skin line is left out) takes that trend out without erasing local contrast such as posterior
    enhancement or shadowing.
    """
    rows = (z_mm > 3.0) & (z_mm <= depth_mm)
    med = np.median(db[rows], axis=1)
    coef = np.polyfit(z_mm[rows], med, 2)
    return np.polyval(coef, z_mm)


def to_image(env: np.ndarray, case: LesionCase, z_mm: np.ndarray, size: int) -> np.ndarray:
    """Log-compress with the case's dynamic range and background grey, average down to `size`, uint8.

    Rows deeper than the imaged depth are black (the padded part of a square image).
    """
    valid = z_mm <= case.depth_mm
    db = 20.0 * np.log10(env + 1e-12 * float(env.max()))
    db -= depth_gain_db(db, z_mm, case.depth_mm)[:, None]
    grey = np.clip(case.background_grey + db / case.dynamic_range_db, 0.0, 1.0)
    grey[~valid] = 0.0
    k = env.shape[0] // size
    small = grey.reshape(size, k, size, k).mean(axis=(1, 3))
    return np.round(small * 255.0).astype(np.uint8)


def label_map(case: LesionCase, probe: Probe, size: int) -> np.ndarray:
    """The lesion mask (sonofm's global legend: 1 = lesion) on the output pixel grid."""
    from sonofm.taxonomy import MASK_IDS

    x, z, _ = square_grid(probe, size, oversample=1)
    inside = lesion_mask(case, x[None, :], z[:, None]) & (z[:, None] <= case.depth_mm)
    return np.where(inside, MASK_IDS["lesion"], 0).astype(np.uint8)


def lesion_extent_mm(case: LesionCase, step_mm: float = 0.05) -> tuple[float, float, float, float]:
    """(x0, z0, x1, z1) of the lesion on a fine grid: measurements and orientation use it."""
    a, b = case.semi_axes_mm
    reach = 2.2 * max(a, b)
    xs = np.arange(case.centre_mm[0] - reach, case.centre_mm[0] + reach, step_mm)
    zs = np.arange(case.centre_mm[1] - reach, case.centre_mm[1] + reach, step_mm)
    m = lesion_mask(case, xs[None, :], zs[:, None])
    rows, cols = np.nonzero(m)
    return float(xs[cols.min()]), float(zs[rows.min()]), float(xs[cols.max()]), float(zs[rows.max()])


# ----------------------------------------------------------------------------- one row


def render_case(
    case: LesionCase, probe: Probe, size: int, density_per_mm2: float
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(image uint8, mask uint8, timings and counts) of one case."""
    t0 = time.perf_counter()
    phantom = build_phantom(case, probe, density_per_mm2)
    x, z, _ = square_grid(probe, size)
    t1 = time.perf_counter()
    env, timing = render_envelope(phantom, probe, (x, z))
    image = to_image(env, case, z, size)
    mask = label_map(case, probe, size)
    timing = {"phantom_s": t1 - t0, **timing, "total_s": time.perf_counter() - t0}
    return image, mask, {**timing, **phantom.info}


def manifest_row(case: LesionCase, probe: Probe, size: int, mask: np.ndarray) -> dict[str, Any]:
    """The manifest row of one case: the same columns and vocabularies `sonofm simulate` writes."""
    from sonofm.reports import Study, study_attributes, write_report
    from sonofm.sim.phantoms.lesions import findings_from_tags
    from sonofm.taxonomy import round_measurement

    spacing = probe.aperture_mm / size
    x0, z0, x1, z1 = lesion_extent_mm(case)
    width, height = x1 - x0, z1 - z0
    tags = case_tags(case, width, height)
    meas = {"lesion_width_mm": width, "lesion_height_mm": height}
    study = Study(
        region=REGION,
        organ=REGION,
        findings=findings_from_tags(tags),
        measurements={k: round_measurement(k, v) for k, v in meas.items()},
    )
    rows, cols = np.nonzero(mask)
    bbox = (
        [[float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)]]
        if rows.size
        else []
    )
    centre = [(case.centre_mm[0] + probe.aperture_mm / 2) / spacing - 0.5, case.centre_mm[1] / spacing - 0.5]
    return {
        "id": case.id,
        "patient_id": case.id,  # every phantom is its own, independent case
        "study_id": case.id,
        "split": "test",
        "image": f"images/{case.id}.png",
        "mask": f"masks/{case.id}.png",
        "region": REGION,
        "organ": REGION,
        "report": write_report(study, np.random.default_rng([case.seed, case.index, 2])),
        "attributes": study_attributes(study),
        "diagnosis": tags["diagnosis"][0],
        "malignant": None,  # a phantom has no pathology
        "measurements": dict(study.measurements),
        "landmarks": {"lesion_center": [round(float(centre[0]), 3), round(float(centre[1]), 3)]},
        "bbox": bbox,
        "pixel_spacing_mm": spacing,
        "source": SOURCE,
        "sex": None,
        "imaging": {
            "simulator": "pymust.simus",
            "probe": "linear",
            "center_freq_mhz": probe.fc_hz / 1e6,
            "n_elements": probe.n_elements,
            "pitch_mm": probe.pitch_m * 1e3,
            "transmit": "one 0-degree plane wave",
            "rx_fnumber": probe.fnumber,
            "attenuation_db_cm_mhz": probe.attenuation_db_cm_mhz,
            "depth_mm": case.depth_mm,
            "width_mm": probe.aperture_mm,
            "dynamic_range_db": case.dynamic_range_db,
            "background_grey": case.background_grey,
            "phantom": {"kind": case.kind, "shape": case.shape, "margin": case.margin},
        },
        "structured": study.to_dict(),
    }


def simulate_one(out: str, case: LesionCase, probe: Probe, size: int, density: float) -> dict[str, Any]:
    """Render one case, write its PNGs and its record (last, atomically); module level for pools."""
    from sonofm.atomic import atomic_write_text
    from sonofm.data.manifest import dumps_json
    from sonofm.data.pngio import write_png

    root = Path(out)
    image, mask, timing = render_case(case, probe, size, density)
    write_png(root / "images" / f"{case.id}.png", image)
    write_png(root / "masks" / f"{case.id}.png", mask)
    row = manifest_row(case, probe, size, mask)
    timing = {k: v if isinstance(v, int) else round(float(v), 4) for k, v in timing.items()}
    rec = {"row": row, "timing": timing}
    atomic_write_text(root / "records" / f"{case.id}.json", dumps_json(rec) + "\n")
    return rec


# ----------------------------------------------------------------------------- the dataset


def dataset_parameters(n: int, seed: int, size: int, density: float, probe: Probe) -> dict[str, Any]:
    return {
        "n": n,
        "seed": seed,
        "size": size,
        "density_per_mm2": density,
        "probe": asdict(probe),
        "region": REGION,
        "kinds": list(KINDS),
        "shapes": list(SHAPES),
        "render_version": RENDER_VERSION,
    }


def _read_params(root: Path) -> dict[str, Any] | None:
    p = root / "records" / "_params.json"
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def make_dataset(
    out: str | Path,
    n: int = 96,
    *,
    seed: int = 0,
    size: int = 64,
    density: float = 8.0,
    probe: Probe | None = None,
    workers: int = 1,
    progress: Callable[[int, int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Render `n` cases into the dataset directory `out`; resumes (and reuses) what is there.

    A directory made with other parameters is refused (naming them). Returns a summary with the
    per-image timings (they stay out of the card, which holds no clock times).
    """
    from sonofm.atomic import atomic_write_text
    from sonofm.data.card import build_card, write_card
    from sonofm.data.manifest import read_manifest, write_manifest
    from sonofm.errors import UserError

    root = Path(out)
    probe = probe or Probe()
    params = dataset_parameters(n, seed, size, density, probe)
    old = _read_params(root)
    if root.exists() and any(root.iterdir()):
        if old is None:
            raise UserError(f"{root} is not empty and was not made by {TOOL}; choose another directory")
        if old != params:
            diff = [f"{k}={old.get(k)!r} (now {params[k]!r})" for k in params if old.get(k) != params[k]]
            raise UserError(f"{root} holds a PyMUST set made with other parameters: {'; '.join(diff)}")
    for sub in ("images", "masks", "records"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "records" / "_params.json", json.dumps(params, indent=2) + "\n")
    cases = sample_cases(n, seed)
    records: dict[str, dict[str, Any]] = {}
    for c in cases:
        p = root / "records" / f"{c.id}.json"
        if p.is_file() and (root / "images" / f"{c.id}.png").is_file():
            try:
                records[c.id] = json.loads(p.read_text(encoding="utf-8"))
            except ValueError:
                p.unlink()
    todo = [c for c in cases if c.id not in records]
    if todo:
        log.info("rendering %d of %d PyMUST cases (%d reused)", len(todo), n, n - len(todo))
    done = len(records)

    def _collect(rec: dict[str, Any]) -> None:
        nonlocal done
        records[rec["row"]["id"]] = rec
        done += 1
        if progress is not None:
            progress(done, n, rec)

    if workers <= 1 or len(todo) <= 1:
        for c in todo:
            _collect(simulate_one(str(root), c, probe, size, density))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            for rec in pool.map(
                simulate_one, *zip(*[(str(root), c, probe, size, density) for c in todo], strict=True)
            ):
                _collect(rec)
    rows = [records[c.id]["row"] for c in cases]
    mpath = write_manifest(rows, root)
    card = build_card(
        read_manifest(mpath),
        created_by={"tool": TOOL, "seed": seed, "parameters": params, "physics": __doc__},
        name=f"pymust-breast-lesions-seed{seed}-n{n}",
        description=(
            "Breast lesion phantoms rendered by PyMUST's SIMUS (an independent simulator) for the "
            "cross-simulator zero-shot check; every image is its own patient in the test split."
        ),
        manifest_file=mpath,
    )
    write_card(card, root)
    timings = [records[c.id]["timing"] for c in cases]
    return {"dir": str(root), "n": n, "rendered_now": len(todo), "timings": timings, "parameters": params}


def timing_summary(timings: Sequence[dict[str, float]]) -> dict[str, Any]:
    """Median / mean / max seconds per image of each stage, and the scatterer counts."""
    out: dict[str, Any] = {}
    for key in ("simus_s", "beamform_s", "phantom_s", "total_s", "scatterers"):
        vals = np.array([t[key] for t in timings if key in t], dtype=np.float64)
        if vals.size:
            out[key] = {
                "median": round(float(np.median(vals)), 3),
                "mean": round(float(vals.mean()), 3),
                "max": round(float(vals.max()), 3),
            }
    out["images"] = len(timings)
    out["cpu_threads"] = 1
    out["host_cpus"] = os.cpu_count()
    return out
