"""Despeckling targets: the same scene rendered with K independent speckle realisations, averaged.

Speckle is the interference of unresolved scatterers; what a despeckling filter should recover
is the mean backscattered intensity of the tissue as seen through the system's point spread
function. Averaging the *intensities* (envelope squared) of K renders that share the tissue,
the scanner settings and the PSF but draw independent scatterer fields is incoherent
compounding: the mean is unchanged and the speckle contrast (std / mean of the intensity) falls
by sqrt(K) (from 1 for fully developed speckle), so the target is a physically meaningful clean
image of the same scene, not a filtered copy of the input. The compounded envelope goes through
the scanner's own display chain (log compression, gain, grey map, optional smoothing), so input
and target share grey levels. Electronic noise is averaged down the same way.

How it hooks in: `simulate_with_clean` runs a region simulator while recording every
`render_bmode` call (tissue model, imaging parameters, size). The region simulators render
exactly one B-mode per returned image, in order, so render k belongs to image k; the recorded
calls are then re-rendered K times with streams ``default_rng([*key, image, look])`` that are
independent of the simulator's own stream, which is left untouched: the normal images are
byte-identical with or without this option. Overlays (burned-in text, Doppler boxes) are not
drawn on the clean images.

numpy/scipy only, like the rest of `sonofm.sim`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from sonofm.sim import physics
from sonofm.sim.imaging import ImagingParams, pixel_grid
from sonofm.sim.registry import simulate_patient

DEFAULT_LOOKS = 16


@dataclass
class RenderCall:
    """One recorded `render_bmode` call."""

    tissue: Any
    params: ImagingParams
    size: int


@contextmanager
def record_renders() -> Iterator[list[RenderCall]]:
    """Record every `render_bmode` call made inside the block (results are passed through unchanged).

    The function is looked up by name in `sonofm.sim.physics` and imported by name into region
    modules, so every `sonofm.sim` module that holds the original is patched for the duration.
    """
    original = physics.render_bmode
    calls: list[RenderCall] = []

    def recording(tissue: Any, params: ImagingParams, size: int, rng: Any) -> physics.BMode:
        calls.append(RenderCall(tissue, params, int(size)))
        return original(tissue, params, size, rng)

    patched = [
        m
        for name, m in list(sys.modules.items())
        if (name == "sonofm.sim" or name.startswith("sonofm.sim."))
        and getattr(m, "render_bmode", None) is original
    ]
    for m in patched:
        m.render_bmode = recording
    try:
        yield calls
    finally:
        for m in patched:
            m.render_bmode = original


def compound_envelope(call: RenderCall, looks: int, key: Sequence[int]) -> np.ndarray:
    """Linear envelope sqrt(mean intensity) of `looks` independent renders of `call`'s scene."""
    if looks < 1:
        raise ValueError(f"looks must be >= 1, got {looks}")
    intensity = np.zeros((call.size, call.size), dtype=np.float64)
    for k in range(looks):
        bm = physics.render_bmode(call.tissue, call.params, call.size, np.random.default_rng([*key, k]))
        intensity += bm.envelope.astype(np.float64) ** 2
    return np.sqrt(intensity / looks)


def compound_image(call: RenderCall, looks: int, key: Sequence[int]) -> np.ndarray:
    """uint8 display image of `compound_envelope` through the scanner's display chain."""
    envelope = compound_envelope(call, looks, key)
    _, _, _, fan = pixel_grid(call.params, call.size)
    rows, cols = np.nonzero(fan)
    image = np.zeros((call.size, call.size), dtype=np.uint8)
    if rows.size:
        # the scanner's own display chain (private to physics; the same function renders the input)
        image[rows, cols] = physics._display(envelope[rows, cols], call.params, fan, rows, cols)
    return image


def simulate_with_clean(
    region: str, rng: np.random.Generator, size: int, looks: int, key: Sequence[int]
) -> tuple[list[Any], list[np.ndarray]]:
    """One patient's `SimImage`s (exactly as `simulate_patient` makes them) and their clean targets."""
    with record_renders() as calls:
        images = simulate_patient(region, rng, size)
    if len(calls) != len(images):
        raise RuntimeError(
            f"region {region!r} rendered {len(calls)} B-mode images for {len(images)} outputs; clean "
            "targets need exactly one render per image"
        )
    return images, [compound_image(c, looks, [*key, i]) for i, c in enumerate(calls)]
