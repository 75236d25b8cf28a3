"""Domain randomisation (the opt-in realism knob ``domain_randomization``): imaging nuisances.

Why: a model trained on one simulator's rendering can learn that rendering's shortcuts. A check
with an independent simulator (PyMUST's SIMUS) found that what a sonofm-trained model had learnt
of shape orientation, microcalcifications, solid/cystic, isoechoic and posterior enhancement did
not transfer (zero-shot AUC near chance on SIMUS images). With this knob on, every image redraws
the scanner's nuisance factors from wide but clinically realistic ranges (here) and the lesion's
rendering nuisances within what its labels allow (`sonofm.sim.phantoms.lesion_randomization`), so
no single rendering can be relied on while every label stays physically true.

How it is plumbed: `sonofm.sim.patient` runs a patient's simulator inside `active(key)` when the
knob is on; the renderers (`sonofm.sim.phantoms.base.render_patient`, the echo exam) ask
`image_rng(k)` for image k's own stream ``default_rng([*key, k])``. Off (the default) it returns
None and nothing else runs, so default datasets stay byte-identical; on, the draws depend only
on (seed, patient, image), never on the worker count. The streams are separate from the
simulator's own, so the anatomy, lesion and scan planes of a patient are the same with the knob
on or off: only their rendering changes.

Geometry (depth, focus, aperture, sector) is never touched: masks, landmarks and calipers are
pixel-exact whatever is drawn. numpy only, like the rest of `sonofm.sim`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np

from sonofm.sim.imaging import N_TGC, ImagingParams

# ---------------------------------------------------------------------------------- imaging ranges
# Centre frequency (MHz) per probe family: the span clinical broadband arrays are driven at in
# fundamental imaging (linear ~5-15, curvilinear ~2-6.5, phased ~1.5-4.5), a little wider than the
# default per-image draw; the PSF's axial and lateral widths both scale with the wavelength.
DR_FREQ_RANGE_MHZ = {"linear": (5.0, 15.0), "curvilinear": (1.8, 6.5), "phased": (1.5, 4.5)}
# -6 dB fractional bandwidth: ~40 % for older/narrowband probes to ~100 % for single-crystal
# broadband arrays; sets the axial pulse length (axial PSF width).
DR_BANDWIDTH_RANGE = (0.4, 1.0)
# Transmit F-number: 1.2 (strong focusing) to 4 (weak focusing or heavy apodisation, which widens
# the main lobe); sets the lateral beam width at the focus and the depth of field.
DR_F_NUMBER_RANGE = (1.2, 4.0)
# Log-compression span (dB): clinical presets run from ~40 dB (contrasty) to ~80 dB (flat, grey).
DR_DYNAMIC_RANGE_DB = (40.0, 80.0)
# Overall gain, drawn as the grey level it gives reference parenchyma (fraction of white; 0.5 is
# gain 0): sonographers keep parenchyma mid grey and leave headroom above it for bright echoes
# (calcifications, walls) and below it for hypoechoic lesions. The gain this takes is
# (level - 0.5) * dynamic range: +-6 dB at 40 dB, +-12 dB at 80 dB.
DR_PARENCHYMA_GREY = (0.35, 0.65)
# TGC: the residual depth gradient (dB over the full depth) left by a mis-set nominal slope, and
# the std / clip of the slider jitter (dB). Sonographers flatten the image with the TGC, so the
# residual stays within about +-15 dB; beyond that the deep half is black or saturated.
DR_TGC_RESIDUAL_DB = (-15.0, 15.0)
DR_TGC_SLIDER_STD_DB = 2.5
DR_TGC_SLIDER_CLIP_DB = 6.0
# One-way attenuation (dB/cm/MHz) of average soft tissue: the nominal TGC compensates it, and the
# residual above is added on top.
SOFT_TISSUE_ATTENUATION = 0.6
# Electronic noise floor at the deepest point after the TGC, re the mean parenchymal echo (dB):
# from a clean modern front end (-45) to a deep, noisy image where the noise shows (-10).
DR_NOISE_DB = (-45.0, -10.0)
# Grey-map gamma (log-uniform): mild, the post-processing curves scanners ship differ about so much.
DR_GAMMA = (0.7, 1.45)
# Scatterers per resolution cell (log-uniform): ~2 gives the sparse, spotty (K-distributed) speckle
# of fat or tendon; above ~20 the speckle is fully developed (Rayleigh), as in liver or thyroid.
DR_SCATTERERS_PER_CELL = (2.0, 100.0)

# Stream of the randomiser in a patient's seed sequence ([seed, index, stream]): 1 reports,
# 2 overlays and 3 clean targets are taken (`sonofm.sim.patient`).
DOMAIN_RANDOMIZATION_STREAM = 4

_N_IMAGING_DRAWS = 9  # fixed, so adding a nuisance at the end never shifts the others

_KEY: ContextVar[tuple[int, ...] | None] = ContextVar("sonofm_sim_domain_randomization", default=None)


@contextmanager
def active(key: Sequence[int] | None) -> Iterator[None]:
    """Turn domain randomisation on (key: the patient's seed sequence) or off (None) in the block.

    A context variable rather than an argument, so the registry's `fn(rng, size)` contract and
    every region simulator (plugins included) stay as they are.
    """
    token = _KEY.set(None if key is None else tuple(int(k) for k in key))
    try:
        yield
    finally:
        _KEY.reset(token)


def image_rng(image: int) -> np.random.Generator | None:
    """Image `image`'s own randomisation stream, or None when the knob is off (the fast path)."""
    key = _KEY.get()
    return None if key is None else np.random.default_rng([*key, int(image)])


def _uniform(u: float, lo_hi: tuple[float, float]) -> float:
    lo, hi = lo_hi
    return float(lo + (hi - lo) * u)


def _log_uniform(u: float, lo_hi: tuple[float, float]) -> float:
    lo, hi = lo_hi
    return float(np.exp(np.log(lo) + (np.log(hi) - np.log(lo)) * u))


def tgc_slope_for_residual(residual_db: float, center_freq_mhz: float, depth_mm: float) -> float:
    """The nominal TGC slope (dB/cm/MHz) that leaves `residual_db` of gain gradient over the depth.

    Parametrised by the residual rather than the slope because what an image shows is the
    round-trip mismatch 2 * f0 * depth * (slope - tissue): the same slope error is 3x worse at
    15 MHz than at 5, so a slope range would black out deep high-frequency images.
    """
    return max(SOFT_TISSUE_ATTENUATION + residual_db / (2.0 * center_freq_mhz * depth_mm / 10.0), 0.0)


def randomize_imaging(params: ImagingParams, rng: np.random.Generator) -> ImagingParams:
    """`params` with every non-geometric scanner nuisance redrawn from the DR_* ranges.

    Depth, focus, aperture, sector and radius are kept (masks and calipers stay exact); so is the
    speckle-reduction smoothing. A fixed number of draws in a fixed order.
    """
    u = rng.uniform(size=_N_IMAGING_DRAWS)
    sliders = np.clip(
        rng.normal(0.0, DR_TGC_SLIDER_STD_DB, N_TGC), -DR_TGC_SLIDER_CLIP_DB, DR_TGC_SLIDER_CLIP_DB
    )
    f0 = _uniform(u[0], DR_FREQ_RANGE_MHZ[params.probe])
    dynamic_range = _uniform(u[3], DR_DYNAMIC_RANGE_DB)
    return dataclasses.replace(
        params,
        center_freq_mhz=f0,
        fractional_bandwidth=_uniform(u[1], DR_BANDWIDTH_RANGE),
        f_number=_uniform(u[2], DR_F_NUMBER_RANGE),
        dynamic_range_db=dynamic_range,
        gain_db=(_uniform(u[4], DR_PARENCHYMA_GREY) - 0.5) * dynamic_range,
        tgc_slope_db_cm_mhz=tgc_slope_for_residual(_uniform(u[5], DR_TGC_RESIDUAL_DB), f0, params.depth_mm),
        tgc_db=tuple(float(t) for t in sliders),
        noise_db=_uniform(u[6], DR_NOISE_DB),
        grey_gamma=_log_uniform(u[7], DR_GAMMA),
        scatterers_per_cell=_log_uniform(u[8], DR_SCATTERERS_PER_CELL),
    )


def with_center_frequency(params: ImagingParams, center_freq_mhz: float) -> ImagingParams:
    """`params` at another centre frequency with the same residual TGC gradient (dB over the depth).

    Used to undo a frequency draw that would change a lesion's posterior label (attenuation, and
    so enhancement and shadowing, grow with frequency) without changing how the image's brightness
    runs with depth.
    """
    if center_freq_mhz == params.center_freq_mhz:
        return params
    excess = (params.tgc_slope_db_cm_mhz - SOFT_TISSUE_ATTENUATION) * params.center_freq_mhz / center_freq_mhz
    return dataclasses.replace(
        params,
        center_freq_mhz=float(center_freq_mhz),
        tgc_slope_db_cm_mhz=max(SOFT_TISSUE_ATTENUATION + excess, 0.0),
    )
