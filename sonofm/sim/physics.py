"""B-mode image formation by the convolution model of speckle, in beam space, then scan conversion.

Pipeline (one image, numpy/scipy only, single-threaded):

1. Beam grid: ``n_lines`` beams (parallel for linear probes, radiating from the apex for sector
   probes) with ``n_samples`` points each along the path from the skin to ``depth_mm``.
2. Tissue: echogenicity (linear amplitude) and attenuation sampled at every beam point from the
   `TissueModel`.
3. Attenuation: the round-trip loss ``2 * f0 * integral(alpha dl)`` accumulated along each beam
   from the skin, so strongly attenuating structures shadow what lies behind them and fluid
   (alpha ~ 0) enhances it. Nothing is painted.
4. Scatterers: one complex Gaussian amplitude (E|s|^2 = 1) per beam point, scaled by the attenuated
   tissue amplitude: fully developed speckle, whose envelope is Rayleigh (mean/std = 1.91). Opt-in
   (`ImagingParams.scatterers_per_cell`, set by domain randomisation): a Poisson number of
   scatterers per beam point instead, K-distributed speckle of the same mean (`scatterer_gate`).
5. Point spread function in complex baseband (IQ): an axial Gaussian pulse envelope whose width
   comes from the fractional bandwidth, and a lateral Gaussian beam, the product of a transmit
   beam of width ``w0 * sqrt(1 + ((l - focus) / z_R)^2)`` (smallest at the transmit focus,
   ``w0 = lambda * F#``, ``z_R = DOF_FACTOR * lambda * F#^2``) and a dynamically focused receive
   beam of about constant width (`lateral_sigma_mm`). Separable: a 1-D filter along
   every beam, then a 1-D filter across beams for each group of equal-width depths. Kernels have
   unit energy, so the mean echo intensity equals the tissue's backscatter whatever the PSF size
   (contrast is exact; resolution only changes the speckle grain).
6. Electronic noise (white before the receive filter), time-gain compensation (nominal attenuation
   compensation of average soft tissue plus the TGC sliders), scan conversion of the IQ data to a
   square pixel grid by bilinear interpolation (interpolating IQ, not the envelope, keeps the
   speckle statistics exactly Rayleigh), envelope detection ``|IQ|`` and log compression.

Sampling trade-off (accuracy for speed): beams are sampled at ``SAMPLES_PER_SIGMA`` samples per
standard deviation of the PSF, but never more finely than ``OVERSAMPLE`` samples per output pixel;
where the display is the coarser of the two, the PSF is widened to at least ``MIN_SIGMA`` samples.
That is what a real image looks like after downsampling to the display size: speckle grain at the
physical size when the pixels resolve it, and about one pixel when they do not.

Written here rather than taken from a library because the physically faithful simulators
(pymust's SIMUS, Field II) take minutes per image; the convolution model is the standard fast
approximation and is the point of this module.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from sonofm.sim.imaging import ImagingParams, _as_rng, pixel_grid
from sonofm.sim.probe import apex_offset, beam_to_world, lateral_span, world_to_beam
from sonofm.sim.tissue import TissueModel

SAMPLES_PER_SIGMA = 1.5  # beam sampling relative to the physical PSF standard deviation
OVERSAMPLE = 1.5  # at most this many beam samples (and beams) per output pixel
MIN_SIGMA = 1.0  # PSF standard deviation never below one beam sample / beam spacing
MAX_LATERAL_SIGMA = 8.0  # cap (in beams) near a sector apex where beams converge
DOF_FACTOR = 10.0  # transmit beam z_R = DOF_FACTOR * lambda * F#^2
RX_WIDTH_FACTOR = 3.0  # receive beam width (dynamic focusing) relative to the transmit focal width
_FWHM = 2.0 * np.sqrt(2.0 * np.log(2.0))
# Echoes this far above reference parenchyma (dB) come from calcium, bone, capsules and walls: dense
# or specular reflectors, which keep fully developed statistics when `scatterers_per_cell` thins
# the soft-tissue scatterers (a microcalcification never vanishes for want of scatterers).
DENSE_REFLECTOR_DB = 12.0
_ENVELOPE_FLOOR = 1e-8


def tune_allocator(keep_bytes: int = 1 << 30) -> bool:
    """Make glibc reuse freed large buffers instead of unmapping them (process-wide; call once).

    numpy allocates a fresh buffer for most temporaries; above glibc's mmap threshold every one is
    a new mapping whose pages fault in on first touch. On virtual machines those faults cost more
    than the arithmetic (``x*x + z*z`` on 150k points: 1.6 ms -> 0.1 ms here), and phantoms plus
    physics make thousands of such temporaries per image. Meant for simulation worker processes
    (the dataset generator's workers); memory freed below `keep_bytes` stays with the process.
    Returns False (and does nothing) where glibc's ``mallopt`` is unavailable.
    """
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    limit = int(min(keep_bytes, 2**31 - 1))
    # 32 MiB is the largest mmap threshold every glibc accepts; beam-space arrays are ~1 MiB
    return bool(mallopt(m_mmap_threshold, min(limit, 32 << 20)) and mallopt(m_trim_threshold, limit))


@dataclass
class BMode:
    """A rendered B-mode image.

    image: uint8 (H, W), 0 outside the fan. envelope: float32 (H, W) linear envelope after TGC and
    before log compression (1.0 ~ rms echo of reference parenchyma), 0 outside the fan.
    x_mm, z_mm: pixel-centre world coordinates of the columns and rows.
    """

    image: np.ndarray
    fan_mask: np.ndarray
    pixel_spacing_mm: float
    x_mm: np.ndarray
    z_mm: np.ndarray
    envelope: np.ndarray
    params: ImagingParams


@dataclass(frozen=True)
class BeamGrid:
    """Sampling of beam space: lateral coordinates (mm or rad) and path lengths (mm)."""

    lateral: np.ndarray  # (n_lines,)
    path_mm: np.ndarray  # (n_samples,)
    sigma_axial: float  # PSF axial standard deviation, in samples
    sigma_lateral: np.ndarray  # (n_samples,) PSF lateral standard deviation per depth, in beams

    @property
    def rho_axial(self) -> float:
        """Correlation of the complex echo between neighbouring samples along a beam."""
        return _neighbour_correlation(self.sigma_axial)

    @property
    def rho_lateral(self) -> np.ndarray:
        """(n_samples,) correlation of the complex echo between neighbouring beams, per depth."""
        uniq, inverse = np.unique(_quantise_sigma(self.sigma_lateral), return_inverse=True)
        return np.array([_neighbour_correlation(float(s)) for s in uniq])[inverse]


def axial_sigma_mm(params: ImagingParams) -> float:
    """Std (mm of depth) of the Gaussian pulse-echo envelope for the probe's fractional bandwidth."""
    sigma_f = params.fractional_bandwidth * params.center_freq_mhz / _FWHM  # MHz
    sigma_t = 1.0 / (2.0 * np.pi * sigma_f)  # microseconds
    return 0.5 * (params.sound_speed_m_s * 1e-3) * sigma_t  # round trip: depth = c t / 2


def lateral_sigma_mm(params: ImagingParams, path_mm: np.ndarray) -> np.ndarray:
    """Std (mm) of the two-way lateral beam profile at path length `path_mm`; smallest at the focus.

    Transmit beam (fixed focus): sigma_tx = sigma0 * sqrt(1 + ((l - focus) / z_R)^2) with
    sigma0 = lambda * F# / 2.355. Receive beam (dynamic receive focusing): about constant,
    RX_WIDTH_FACTOR * sigma0. The pulse-echo profile is their product, a Gaussian with
    1 / sigma^2 = 1 / sigma_tx^2 + 1 / sigma_rx^2: it widens away from the focus but saturates,
    instead of smearing the near field as a transmit-only beam would.
    """
    lam = params.wavelength_mm
    sigma0 = lam * params.f_number / _FWHM
    z_r = DOF_FACTOR * lam * params.f_number**2
    tx2 = sigma0**2 * (1.0 + ((np.asarray(path_mm, dtype=np.float64) - params.focus_mm) / z_r) ** 2)
    rx2 = (RX_WIDTH_FACTOR * sigma0) ** 2
    return np.sqrt(tx2 * rx2 / (tx2 + rx2))


def beam_grid(params: ImagingParams, pixel_spacing_mm: float) -> BeamGrid:
    """Choose beams and samples: fine enough for the PSF, no finer than the display needs."""
    depth = params.depth_mm
    sig_ax = axial_sigma_mm(params)
    n_phys = int(np.ceil(depth * SAMPLES_PER_SIGMA / sig_ax)) + 1
    n_disp = int(np.ceil(depth * OVERSAMPLE / pixel_spacing_mm)) + 1
    n_samples = max(16, min(n_phys, n_disp))
    path = np.linspace(0.0, depth, n_samples)
    dz = path[1] - path[0]

    lo, hi = lateral_span(params)
    r0 = apex_offset(params)
    if params.probe == "linear":
        extent_focus = extent_max = hi - lo
    else:
        extent_focus = (r0 + params.focus_mm) * (hi - lo)
        extent_max = (r0 + depth) * (hi - lo)
    sig_lat0 = float(lateral_sigma_mm(params, params.focus_mm))
    l_phys = int(np.ceil(extent_focus * SAMPLES_PER_SIGMA / sig_lat0)) + 1
    l_disp = int(np.ceil(extent_max * OVERSAMPLE / pixel_spacing_mm)) + 1
    n_lines = max(16, min(l_phys, l_disp))
    lateral = np.linspace(lo, hi, n_lines)

    spacing = (hi - lo) / (n_lines - 1)
    spacing_mm = np.full(n_samples, spacing) if params.probe == "linear" else (r0 + path) * spacing
    with np.errstate(divide="ignore"):
        sig_lat = lateral_sigma_mm(params, path) / spacing_mm
    sig_lat = np.clip(
        np.nan_to_num(sig_lat, nan=MAX_LATERAL_SIGMA, posinf=MAX_LATERAL_SIGMA), MIN_SIGMA, MAX_LATERAL_SIGMA
    )
    return BeamGrid(lateral, path, max(sig_ax / dz, MIN_SIGMA), sig_lat)


@functools.lru_cache(maxsize=1024)
def _unit_energy_gaussian(sigma: float) -> np.ndarray:
    """Sampled Gaussian with sum of squares 1 (keeps mean speckle intensity = backscatter)."""
    half = int(np.ceil(3.0 * sigma))
    t = np.arange(-half, half + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    k = (k / np.sqrt(np.sum(k * k))).astype(np.float32)
    k.flags.writeable = False  # cached: shared between calls
    return k


def _neighbour_correlation(sigma: float) -> float:
    """sum_i k[i] k[i+1] of the unit-energy kernel: correlation of white noise filtered by it at lag 1."""
    k = _unit_energy_gaussian(float(sigma)).astype(np.float64)
    return float(np.dot(k[:-1], k[1:]))


_SIGMA_STEP = 0.06  # lateral sigmas are quantised to 6 % steps so equal-width rows share a kernel


def _quantise_sigma(sigma_rows: np.ndarray) -> np.ndarray:
    return np.exp(np.round(np.log(sigma_rows) / _SIGMA_STEP) * _SIGMA_STEP)


def _lateral_filter(iq: np.ndarray, sigma_rows: np.ndarray) -> None:
    """In place: filter each depth row of iq (2, n_samples, n_lines) across beams with its own sigma.

    Rows are grouped into runs whose quantised sigma is equal and each run is filtered with one
    kernel; the filter acts along rows only, so runs never interact.
    """
    q = _quantise_sigma(sigma_rows)
    edges = np.flatnonzero(np.diff(q)) + 1
    starts = np.concatenate(([0], edges))
    stops = np.concatenate((edges, [len(q)]))
    for a, b in zip(starts, stops, strict=True):
        kernel = _unit_energy_gaussian(float(q[a]))
        block = iq[:, a:b, :]
        ndimage.correlate1d(block, kernel, axis=2, output=block, mode="reflect")


def tgc_db(params: ImagingParams, path_mm: np.ndarray) -> np.ndarray:
    """Total time-gain compensation (dB) at path lengths: nominal attenuation compensation + sliders."""
    path_mm = np.asarray(path_mm, dtype=np.float64)
    nominal = 2.0 * params.tgc_slope_db_cm_mhz * params.center_freq_mhz * path_mm / 10.0
    knots = np.linspace(0.0, params.depth_mm, len(params.tgc_db))
    return nominal + np.interp(path_mm, knots, np.asarray(params.tgc_db))


def scatterer_gate(grid: BeamGrid, per_cell: float, rng: np.random.Generator) -> np.ndarray:
    """(n_samples, n_lines) echo-power weights N / m for a finite scatterer density.

    Fully developed speckle (the default) puts infinitely many scatterers in every resolution
    cell, so each beam sample is one complex Gaussian of the tissue's backscatter. With `per_cell`
    scatterers per cell on average, sample i holds N_i ~ Poisson(m) of them (m = per_cell / cell,
    cell = 2 pi sigma_ax sigma_lat samples, the effective number of samples one PSF sums, i.e.
    1 / sum(k^4) of the unit-energy PSF k) and their sum is a Gaussian of power N_i / m times the
    backscatter. E[N_i / m] = 1 keeps the mean echo (contrast) exact; after the PSF the intensity
    has contrast^2 = 1 + 2 / per_cell, the K-distribution with effective scatterer number
    `per_cell`: sparse tissue gives the darker, spottier speckle that real scanners show.
    """
    cell = 2.0 * np.pi * grid.sigma_axial * grid.sigma_lateral  # (n_samples,) samples per PSF cell
    lam = (per_cell / cell)[:, None]
    counts = rng.poisson(lam, size=(len(grid.path_mm), len(grid.lateral)))
    return counts / lam


def beam_iq(
    tissue: TissueModel, params: ImagingParams, grid: BeamGrid, rng: np.random.Generator
) -> np.ndarray:
    """Complex baseband echo (as float32 (2, n_samples, n_lines): real, imag) after noise and TGC."""
    lat, path = grid.lateral, grid.path_mm
    x, z = beam_to_world(params, lat[None, :], path[:, None])
    props = tissue.properties(x, z)

    # Round-trip attenuation accumulated from the skin (exclusive cumulative sum: a sample is not
    # attenuated by itself), in dB: 2 * f0 * sum(alpha * dl).
    dl_cm = (path[1] - path[0]) / 10.0
    att = np.asarray(props.attenuation, dtype=np.float64)
    one_way = np.cumsum(att, axis=0) - att
    loss_db = 2.0 * params.center_freq_mhz * dl_cm * one_way
    amp = props.amplitude * 10.0 ** (-loss_db / 20.0)

    # Electronic noise enters before the TGC at a constant level (set so that it reaches noise_db
    # at the deepest point after the TGC) and is band-limited by the same receive filter/beam as
    # the echoes. Echo and noise are independent zero-mean complex Gaussians, so their sum is one
    # complex Gaussian of variance amp^2 + noise^2: one draw serves both.
    gain_db = tgc_db(params, path)
    noise_rms = 10.0 ** ((params.noise_db - gain_db[-1]) / 20.0)
    n_s, n_l = amp.shape
    iq = rng.standard_normal((2, n_s, n_l), dtype=np.float32)
    echo_power = amp * amp
    if params.scatterers_per_cell is not None:  # opt-in (domain randomisation): sparse scatterers
        gate = scatterer_gate(grid, params.scatterers_per_cell, rng)
        echo_power *= np.where(props.echogenicity_db >= DENSE_REFLECTOR_DB, 1.0, gate)
    std = np.sqrt(0.5 * (echo_power + noise_rms * noise_rms)).astype(np.float32)
    iq *= std

    ndimage.correlate1d(iq, _unit_energy_gaussian(grid.sigma_axial), axis=1, output=iq, mode="reflect")
    _lateral_filter(iq, grid.sigma_lateral)
    iq *= (10.0 ** (gain_db / 20.0)).astype(np.float32)[None, :, None]
    return iq


def _interp_variance(t: np.ndarray, rho: float | np.ndarray) -> np.ndarray:
    """Variance of (1 - t) a + t b for unit-variance a, b with correlation rho."""
    return (1.0 - t) ** 2 + t**2 + 2.0 * t * (1.0 - t) * rho


def render_bmode(
    tissue: TissueModel, params: ImagingParams, size: int, rng: np.random.Generator | int | None
) -> BMode:
    """Simulate one B-mode image of `tissue` with scanner settings `params`, `size` x `size` pixels.

    Deterministic given `rng` (a Generator or a seed).
    """
    rng = _as_rng(rng)
    x_pix, z_pix, spacing, fan = pixel_grid(params, size)
    grid = beam_grid(params, spacing)
    iq = beam_iq(tissue, params, grid, rng)

    rows, cols = np.nonzero(fan)
    lat, path = world_to_beam(params, x_pix[cols], z_pix[rows])
    lo, hi = lateral_span(params)
    li = (lat - lo) * ((len(grid.lateral) - 1) / (hi - lo))
    si = path * ((len(grid.path_mm) - 1) / params.depth_mm)
    coords = np.stack([si, li])
    re = ndimage.map_coordinates(iq[0], coords, order=1, mode="nearest")
    im = ndimage.map_coordinates(iq[1], coords, order=1, mode="nearest")
    # Bilinear interpolation between correlated samples loses power between them (a weighted sum
    # of partly independent speckle); dividing by its known variance keeps the mean echo exact and
    # avoids a moire of sample-grid-periodic brightness.
    ts = si - np.floor(si)
    tl = li - np.floor(li)
    rho_l = grid.rho_lateral[np.clip(np.floor(si).astype(np.int64), 0, len(grid.path_mm) - 1)]
    var = _interp_variance(ts, grid.rho_axial) * _interp_variance(tl, rho_l)
    env_fan = np.sqrt((re * re + im * im) / var)

    envelope = np.zeros((size, size), dtype=np.float32)
    envelope[rows, cols] = env_fan
    image = np.zeros((size, size), dtype=np.uint8)
    image[rows, cols] = _display(env_fan, params, fan, rows, cols)
    return BMode(image, fan, float(spacing), x_pix, z_pix, envelope, params)


def _display(
    env: np.ndarray, params: ImagingParams, fan: np.ndarray, rows: np.ndarray, cols: np.ndarray
) -> np.ndarray:
    """Log compression (reference parenchyma at mid grey + gain), grey map and optional smoothing."""
    db = 20.0 * np.log10(np.maximum(env, _ENVELOPE_FLOOR))
    level = np.clip((db + params.gain_db) / params.dynamic_range_db + 0.5, 0.0, 1.0)
    if params.smoothing_px > 0:
        # normalised convolution: smooth inside the fan without pulling in the black outside
        full = np.zeros(fan.shape, dtype=np.float32)
        full[rows, cols] = level
        num = ndimage.gaussian_filter(full, params.smoothing_px, mode="constant")
        den = ndimage.gaussian_filter(fan.astype(np.float32), params.smoothing_px, mode="constant")
        level = num[rows, cols] / np.maximum(den[rows, cols], 1e-6)
    if params.grey_gamma != 1.0:
        level = level**params.grey_gamma
    return np.round(level * 255.0).astype(np.uint8)
