"""Ultrasound augmentations that keep image, mask and landmarks aligned.

Generic photometric augmentations do not look like ultrasound. These mimic what changes between
real acquisitions: depth-dependent attenuation and TGC mistakes, acoustic shadows from ribs or
gas, near-field haze/reverberation, scanner speckle reduction, gain/contrast settings, and small
probe movements. Written here (numpy/scipy) because no library ships ultrasound-specific ones;
the geometric part uses one affine matrix for image, mask and points so they cannot drift apart.
Transforms are module-level functions bound with `functools.partial`, so they pickle: DataLoader
workers started by spawn/forkserver (macOS default, `train.worker_start`) receive them intact.

All transforms take and return a `Sample`: image float32 (H, W) in [0, 1], mask int (H, W) or
None, points float (N, 2) as (x, y) pixel coordinates (NaN rows = missing landmark).
Randomness comes only from the `np.random.Generator` passed in, so a (seed, epoch, index) triple
reproduces an augmented sample exactly (needed for bit-identical resumed training).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
from scipy import ndimage


@dataclass
class Sample:
    image: np.ndarray
    mask: np.ndarray | None = None
    points: np.ndarray | None = None


Transform = Callable[[Sample, np.random.Generator], Sample]


def _depth_attenuation(s: Sample, rng: np.random.Generator, max_db: float) -> Sample:
    h = s.image.shape[0]
    slope_db = rng.uniform(-max_db, max_db)
    gain = 10 ** (-slope_db * np.linspace(0, 1, h, dtype=np.float32) / 20)
    return replace(s, image=np.clip(s.image * gain[:, None], 0, 1))


def depth_attenuation(max_db: float = 6.0) -> Transform:
    """Extra (or compensated) attenuation with depth: a TGC mis-setting."""
    return partial(_depth_attenuation, max_db=max_db)


def _acoustic_shadow(
    s: Sample, rng: np.random.Generator, max_strength: float, max_width_frac: float
) -> Sample:
    h, w = s.image.shape
    cx = rng.uniform(0, w)
    half = rng.uniform(0.03, max_width_frac) * w / 2
    z0 = rng.uniform(0.2, 0.7) * h
    strength = rng.uniform(0.3, max_strength)
    xs = np.arange(w, dtype=np.float32)
    lateral = np.exp(-0.5 * ((xs - cx) / max(half, 1.0)) ** 4)
    rows = np.arange(h, dtype=np.float32)
    depth = np.clip((rows - z0) / (0.05 * h), 0, 1)
    factor = 1 - strength * depth[:, None] * lateral[None, :]
    return replace(s, image=s.image * factor.astype(np.float32))


def acoustic_shadow(max_strength: float = 0.7, max_width_frac: float = 0.15) -> Transform:
    """A dark vertical band below a random depth, as behind a rib or bowel gas."""
    return partial(_acoustic_shadow, max_strength=max_strength, max_width_frac=max_width_frac)


def _haze(s: Sample, rng: np.random.Generator, max_level: float) -> Sample:
    h, w = s.image.shape
    level = rng.uniform(0.05, max_level)
    extent = rng.uniform(0.1, 0.4) * h
    rows = np.arange(h, dtype=np.float32)
    veil = level * np.exp(-rows / extent)[:, None]
    noise = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), sigma=max(h / 32, 1))
    noise /= max(float(np.abs(noise).max()), 1e-6)
    img = s.image + veil * (1 + 0.5 * noise) * (s.image > 0)
    return replace(s, image=np.clip(img, 0, 1))


def haze(max_level: float = 0.25) -> Transform:
    """Near-field clutter: a bright, smooth veil that fades with depth."""
    return partial(_haze, max_level=max_level)


def _speckle_reduction(s: Sample, rng: np.random.Generator, max_sigma: float) -> Sample:
    sigma = rng.uniform(0.3, max_sigma)
    return replace(s, image=ndimage.gaussian_filter(s.image, sigma=sigma).astype(np.float32))


def speckle_reduction(max_sigma: float = 1.2) -> Transform:
    """Scanner-side speckle smoothing (as SRI/XRES-like filters do)."""
    return partial(_speckle_reduction, max_sigma=max_sigma)


def _gain_contrast(
    s: Sample, rng: np.random.Generator, max_gain: float, gamma_range: tuple[float, float]
) -> Sample:
    gamma = float(np.exp(rng.uniform(np.log(gamma_range[0]), np.log(gamma_range[1]))))
    gain = 1 + rng.uniform(-max_gain, max_gain)
    img = np.clip(np.power(np.clip(s.image, 0, 1), gamma) * gain, 0, 1)
    return replace(s, image=img.astype(np.float32))


def gain_contrast(max_gain: float = 0.2, gamma_range: tuple[float, float] = (0.7, 1.4)) -> Transform:
    """Overall gain and dynamic-range (gamma) changes of the display map."""
    return partial(_gain_contrast, max_gain=max_gain, gamma_range=gamma_range)


def affine_matrix(
    shape: tuple[int, int], angle_deg: float, scale: float, shift: tuple[float, float]
) -> np.ndarray:
    """3x3 matrix mapping output (x, y) pixel coordinates to input coordinates.

    Rotation and scaling are about the image centre; `shift` is in pixels (x, y).
    """
    h, w = shape
    c = np.array([(w - 1) / 2, (h - 1) / 2])
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) * scale
    fwd = np.eye(3)
    fwd[:2, :2] = rot
    fwd[:2, 2] = c + np.asarray(shift) - rot @ c  # input -> output
    return np.linalg.inv(fwd)


def apply_affine(s: Sample, out_to_in: np.ndarray) -> Sample:
    """Warp image (bilinear), mask (nearest) and points with one matrix."""
    # ndimage works in (row, col) = (y, x); convert the (x, y) homogeneous matrix.
    perm = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=np.float64)
    m = perm @ out_to_in @ perm
    img = ndimage.affine_transform(s.image, m[:2, :2], offset=m[:2, 2], order=1, mode="constant", cval=0.0)
    mask = None
    if s.mask is not None:
        mask = ndimage.affine_transform(s.mask, m[:2, :2], offset=m[:2, 2], order=0, mode="constant", cval=0)
    pts = None
    if s.points is not None:
        in_to_out = np.linalg.inv(out_to_in)
        p = np.asarray(s.points, dtype=np.float64)
        homo = np.concatenate([p, np.ones((len(p), 1))], axis=1)
        pts = (homo @ in_to_out.T)[:, :2]
    return Sample(img.astype(np.float32), mask, pts)


def _small_affine(
    s: Sample, rng: np.random.Generator, max_angle: float, scale_range: tuple[float, float], max_shift: float
) -> Sample:
    h, w = s.image.shape
    m = affine_matrix(
        (h, w),
        angle_deg=rng.uniform(-max_angle, max_angle),
        scale=rng.uniform(*scale_range),
        shift=(rng.uniform(-max_shift, max_shift) * w, rng.uniform(-max_shift, max_shift) * h),
    )
    return apply_affine(s, m)


def small_affine(
    max_angle: float = 8.0, scale_range: tuple[float, float] = (0.9, 1.1), max_shift: float = 0.05
) -> Transform:
    """Small probe movements: rotation, zoom and translation."""
    return partial(_small_affine, max_angle=max_angle, scale_range=scale_range, max_shift=max_shift)


@dataclass
class RandomApply:
    """Apply each transform with its own probability, in order."""

    transforms: Sequence[tuple[Transform, float]]

    def __call__(self, s: Sample, rng: np.random.Generator) -> Sample:
        for t, p in self.transforms:
            if rng.random() < p:
                s = t(s, rng)
        return s


def default_ultrasound_augment(strength: float = 1.0) -> RandomApply:
    """The default training recipe; `strength` scales every probability (0 turns it off)."""
    p = lambda x: min(1.0, x * strength)  # noqa: E731
    return RandomApply(
        [
            (small_affine(), p(0.5)),
            (depth_attenuation(), p(0.3)),
            (acoustic_shadow(), p(0.15)),
            (haze(), p(0.15)),
            (speckle_reduction(), p(0.2)),
            (gain_contrast(), p(0.5)),
        ]
    )


def training_augment(augment: bool | float) -> RandomApply | None:
    """The default recipe at `augment`'s strength (True: 1.0, a number: that strength), or None."""
    strength = float(augment) if not isinstance(augment, bool) else (1.0 if augment else 0.0)
    return default_ultrasound_augment(strength) if strength > 0 else None
