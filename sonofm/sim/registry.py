"""Region simulators by name: `simulate_patient(region, rng, size)` returns one patient's images.

Region modules register themselves with `@register("breast")`; they are imported lazily here so
that importing the registry stays cheap and free of import cycles.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import numpy as np

from sonofm.sim.types import SimImage

RegionSimulator = Callable[[np.random.Generator, int], list[SimImage]]

_REGISTRY: dict[str, RegionSimulator] = {}
_PROVIDERS = ("sonofm.sim.phantoms", "sonofm.sim.echo")
_loaded = False


def register(region: str) -> Callable[[RegionSimulator], RegionSimulator]:
    """Decorator: make `fn(rng, size) -> list[SimImage]` the simulator of `region`."""

    def deco(fn: RegionSimulator) -> RegionSimulator:
        _REGISTRY[region] = fn
        return fn

    return deco


def _load_providers() -> None:
    global _loaded
    if _loaded:
        return
    for mod in _PROVIDERS:
        importlib.import_module(mod)
    _loaded = True


def registered_regions() -> tuple[str, ...]:
    _load_providers()
    return tuple(sorted(_REGISTRY))


def simulate_patient(region: str, rng: np.random.Generator, size: int) -> list[SimImage]:
    """All images of one simulated patient of `region`; randomness only from `rng`."""
    _load_providers()
    try:
        fn = _REGISTRY[region]
    except KeyError:
        valid = ", ".join(sorted(_REGISTRY)) or "(none registered)"
        raise ValueError(f"unknown region {region!r}; valid regions: {valid}") from None
    return fn(rng, size)
