"""Echo measurements read back from masks and label lines, the way a sonographer measures.

- LV volumes by the method of discs (ASE/EACVI, Lang 2015): the cavity between the mitral annulus
  midpoint and the apex is cut into 20 discs perpendicular to the long axis; single-plane
  V = sum(pi/4 d_i^2 h), biplane V = sum(pi/4 a_i b_i h) with h from the longer length. Each disc
  diameter is the mask area of its slab divided by the slab height (uses every pixel, so pixel
  quantisation averages out instead of biasing one chord).
- LA volume by the biplane area-length formula V = 0.85 A1 A2 / L (L the shorter length).
- Linear PLAX dimensions (LVID, IVS, LVPW, LA diameter, effusion depth) from the runs of labels
  along a caliper line: on the continuous tissue labels (sub-pixel, what calipers on a zoomed
  frame give) or on a rendered mask (pixel resolution).
- Teichholz LV volumes from PLAX diameters live in `sonofm.sim.echo.heart`.

Written here because these clinical formulas are the point: no library implements them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sonofm.sim.tissue import TissueModel

N_DISCS = 20


def _disc_diameters(
    mask: np.ndarray, base_px: Sequence[float], apex_px: Sequence[float], spacing_mm: float, n_discs: int
) -> tuple[np.ndarray, float]:
    """(disc diameters mm (n,), long-axis length mm) of a boolean cavity mask."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    base = np.asarray(base_px, dtype=np.float64)
    axis = np.asarray(apex_px, dtype=np.float64) - base
    length_px = float(np.hypot(axis[0], axis[1]))
    if length_px <= 0:
        raise ValueError("base and apex landmarks coincide; cannot define the LV long axis")
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        raise ValueError("empty cavity mask: nothing to measure")
    t = ((cols - base[0]) * axis[0] + (rows - base[1]) * axis[1]) / length_px**2
    idx = np.clip(np.floor(t * n_discs), 0, n_discs - 1).astype(np.int64)
    counts = np.bincount(idx, minlength=n_discs).astype(np.float64)
    length_mm = length_px * spacing_mm
    h = length_mm / n_discs
    return counts * spacing_mm**2 / h, length_mm


def simpson_volume_ml(
    mask: np.ndarray,
    base_px: Sequence[float],
    apex_px: Sequence[float],
    spacing_mm: float,
    n_discs: int = N_DISCS,
) -> float:
    """Single-plane method-of-discs volume (mL) of a cavity mask; landmarks are (col, row) pixels."""
    d, length = _disc_diameters(mask, base_px, apex_px, spacing_mm, n_discs)
    return float(np.sum(np.pi / 4.0 * d**2) * length / n_discs / 1000.0)


def biplane_volume_ml(
    mask_a: np.ndarray,
    base_a: Sequence[float],
    apex_a: Sequence[float],
    spacing_a: float,
    mask_b: np.ndarray,
    base_b: Sequence[float],
    apex_b: Sequence[float],
    spacing_b: float,
    n_discs: int = N_DISCS,
) -> float:
    """Biplane method-of-discs volume (mL) from two orthogonal apical cuts (A4C and A2C)."""
    da, la = _disc_diameters(mask_a, base_a, apex_a, spacing_a, n_discs)
    db, lb = _disc_diameters(mask_b, base_b, apex_b, spacing_b, n_discs)
    return float(np.sum(np.pi / 4.0 * da * db) * max(la, lb) / n_discs / 1000.0)


def ejection_fraction(edv_ml: float, esv_ml: float) -> float:
    """EF (%) = 100 (EDV - ESV) / EDV."""
    if edv_ml <= 0:
        raise ValueError(f"end-diastolic volume must be > 0, got {edv_ml}")
    return 100.0 * (edv_ml - esv_ml) / edv_ml


def area_length_volume_ml(
    mask_a: np.ndarray,
    base_a: Sequence[float],
    spacing_a: float,
    mask_b: np.ndarray,
    base_b: Sequence[float],
    spacing_b: float,
) -> float:
    """Biplane area-length volume (mL): 0.85 A1 A2 / L, L = shorter annulus-to-roof length."""
    areas, lengths = [], []
    for mask, base, spacing in ((mask_a, base_a, spacing_a), (mask_b, base_b, spacing_b)):
        rows, cols = np.nonzero(np.asarray(mask, dtype=bool))
        if rows.size == 0:
            raise ValueError("empty atrial mask: nothing to measure")
        areas.append(rows.size * spacing**2)
        lengths.append(float(np.max(np.hypot(cols - base[0], rows - base[1]))) * spacing)
    return 0.85 * areas[0] * areas[1] / min(lengths) / 1000.0


@dataclass(frozen=True)
class Run:
    """A stretch of one label along a caliper line: [start_mm, end_mm) from the line's start."""

    label: int
    start_mm: float
    end_mm: float

    @property
    def length_mm(self) -> float:
        return self.end_mm - self.start_mm


def _runs(labels: np.ndarray, step_mm: float) -> list[Run]:
    change = np.flatnonzero(np.diff(labels.astype(np.int64))) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [labels.size]])
    return [Run(int(labels[s]), s * step_mm, e * step_mm) for s, e in zip(starts, ends, strict=True)]


def label_runs(
    tissue: TissueModel, p0: Sequence[float], p1: Sequence[float], step_mm: float = 0.05
) -> list[Run]:
    """Runs of tissue labels along the segment p0 -> p1 (mm), sampled every `step_mm`."""
    p0a, p1a = np.asarray(p0, dtype=np.float64), np.asarray(p1, dtype=np.float64)
    length = float(np.hypot(*(p1a - p0a)))
    n = max(2, int(round(length / step_mm)) + 1)
    t = (np.arange(n) + 0.5) / n
    pts = p0a + t[:, None] * (p1a - p0a)
    labels = tissue.properties(pts[:, 0], pts[:, 1]).label
    return _runs(labels, length / n)


def mask_runs(
    mask: np.ndarray, p0_px: Sequence[float], p1_px: Sequence[float], spacing_mm: float, step_px: float = 0.1
) -> list[Run]:
    """Runs of mask labels along a pixel-space segment (nearest pixel), lengths in mm."""
    p0a, p1a = np.asarray(p0_px, dtype=np.float64), np.asarray(p1_px, dtype=np.float64)
    length = float(np.hypot(*(p1a - p0a)))
    n = max(2, int(round(length / step_px)) + 1)
    t = (np.arange(n) + 0.5) / n
    pts = p0a + t[:, None] * (p1a - p0a)
    cols = np.clip(np.rint(pts[:, 0]).astype(np.int64), 0, mask.shape[1] - 1)
    rows = np.clip(np.rint(pts[:, 1]).astype(np.int64), 0, mask.shape[0] - 1)
    return _runs(np.asarray(mask)[rows, cols], length / n * spacing_mm)


@dataclass(frozen=True)
class MinorAxis:
    """PLAX minor-axis calipers (mm): septum, LV internal diameter, posterior wall, effusion."""

    ivs_mm: float
    lvid_mm: float
    lvpw_mm: float
    pe_mm: float


def minor_axis(runs: list[Run], lv: int = 3, myo: int = 4, effusion: int = 8) -> MinorAxis:
    """Read IVS | LVID | LVPW | effusion from the label runs of an anterior-to-posterior line."""
    lv_idx = [i for i, r in enumerate(runs) if r.label == lv]
    if not lv_idx:
        raise ValueError("caliper line does not cross the LV cavity")
    i = max(lv_idx, key=lambda j: runs[j].length_mm)
    if i == 0 or i + 1 >= len(runs) or runs[i - 1].label != myo or runs[i + 1].label != myo:
        raise ValueError("caliper line must cross myocardium on both sides of the LV cavity")
    pe = runs[i + 2].length_mm if i + 2 < len(runs) and runs[i + 2].label == effusion else 0.0
    return MinorAxis(runs[i - 1].length_mm, runs[i].length_mm, runs[i + 1].length_mm, pe)


def longest_run_mm(runs: list[Run], label: int) -> float:
    """Length of the longest run of `label` (0 when absent)."""
    return max((r.length_mm for r in runs if r.label == label), default=0.0)
