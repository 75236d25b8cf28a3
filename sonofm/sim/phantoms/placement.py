"""Where the probe goes and how one image's tissue model is put together.

Imaging parameters whose fan holds a target (`params_for_target`), a lateral probe offset that
keeps it there (`choose_shift`; both at once: `fit_probe`; centred over a patient-frame target:
`place_probe`), and the scene assembly: body wall under the probe, the patient-frame anatomy
moved with the probe, the lesion painted last (`assemble`, `paint_lesion`).
"""

from __future__ import annotations

import numpy as np

from sonofm.sim.imaging import ImagingParams, sample_imaging_params
from sonofm.sim.phantoms.anatomy import LayerSpec, add_body_wall
from sonofm.sim.phantoms.lesion_section import LesionSection
from sonofm.sim.phantoms.shapes import moved
from sonofm.sim.probe import inside_fan
from sonofm.sim.tissue import Tissue, TissueModel


def fits_in_fan(
    params: ImagingParams, bounds: tuple[float, float, float, float], margin_mm: float = 1.5, n: int = 24
) -> bool:
    """Whether the rectangle `bounds` (xmin, zmin, xmax, zmax), grown by a margin, lies inside the fan."""
    x0, z0, x1, z1 = bounds
    # the skin (z = 0) bounds the fan from above: a target may come close to it, and a large
    # superficial lesion may even reach it (the part above the skin is never imaged)
    x0, z0, x1, z1 = x0 - margin_mm, max(z0 - margin_mm, 0.01), x1 + margin_mm, z1 + margin_mm
    t = np.linspace(0.0, 1.0, n)
    xs = np.concatenate([x0 + (x1 - x0) * t, x0 + (x1 - x0) * t, np.full(n, x0), np.full(n, x1)])
    zs = np.concatenate([np.full(n, z0), np.full(n, z1), z0 + (z1 - z0) * t, z0 + (z1 - z0) * t])
    return bool(inside_fan(params, xs, zs).all())


def params_for_target(
    rng: np.random.Generator,
    probe: str,
    depth_mm: tuple[float, float],
    target_bounds: tuple[float, float, float, float],
    *,
    margin_mm: float = 2.0,
    **overrides,
) -> ImagingParams:
    """Imaging parameters whose fan contains `target_bounds` (the lesion): deep enough, wide enough.

    Draws normally, then deepens the image and widens the aperture/sector (within each probe's
    range, then beyond if a very large lesion needs it) until the target fits.
    """
    x0, z0, x1, z1 = target_bounds
    lo, hi = depth_mm
    need = z1 + margin_mm + 0.1 * (z1 - z0) + 3.0
    lo, hi = max(lo, min(need, 1.5 * hi)), max(hi, need)
    p = sample_imaging_params(rng, probe, (lo, hi), **overrides)
    for _ in range(12):
        if fits_in_fan(p, target_bounds, margin_mm):
            return p
        if probe == "linear":
            p.width_mm = float(min(p.width_mm * 1.15, 80.0))
        else:
            p.sector_deg = float(min(p.sector_deg * 1.12, 100.0))
        p.depth_mm = float(p.depth_mm * 1.05)
        p.focus_mm = float(min(p.focus_mm, 0.9 * p.depth_mm))
    if not fits_in_fan(p, target_bounds, margin_mm):
        raise RuntimeError(f"lesion {target_bounds} does not fit the field of view of {p.to_dict()}")
    return p


def choose_shift(
    rng: np.random.Generator,
    params: ImagingParams,
    bounds: tuple[float, float, float, float],
    max_shift_mm: float,
    margin_mm: float = 2.0,
) -> float:
    """A lateral probe offset (mm) that keeps `bounds` (the target at offset 0) inside the fan.

    The probe moves by `shift`, so the target appears at x - shift; halves the draw until it fits.
    """
    shift = float(rng.uniform(-max_shift_mm, max_shift_mm))
    x0, z0, x1, z1 = bounds
    for _ in range(8):
        if fits_in_fan(params, (x0 - shift, z0, x1 - shift, z1), margin_mm):
            return shift
        shift *= 0.5
    return 0.0


def fit_probe(
    rng: np.random.Generator,
    probe: str,
    depth_mm: tuple[float, float],
    target: tuple[float, float, float, float],
    max_shift_mm: float,
    margin_mm: float = 2.0,
    **overrides,
) -> tuple[ImagingParams, float]:
    """Imaging parameters whose fan holds `target` (bounds with the probe at x = 0) and a lateral
    probe offset (mm) that keeps it there: `params_for_target`, then `choose_shift`."""
    params = params_for_target(rng, probe, depth_mm, target, margin_mm=margin_mm, **overrides)
    return params, choose_shift(rng, params, target, max_shift_mm, margin_mm=margin_mm)


def place_probe(
    rng: np.random.Generator,
    probe: str,
    depth_mm: tuple[float, float],
    target: tuple[float, float, float, float],
    max_shift_mm: float,
    margin_mm: float = 3.0,
    **overrides,
) -> tuple[ImagingParams, float]:
    """Imaging parameters and the probe's lateral position (patient frame, mm) that keep `target`
    (patient-frame bounds) in the fan: the probe is centred over the target, then moved a little."""
    cx = 0.5 * (target[0] + target[2])
    rel = (target[0] - cx, target[1], target[2] - cx, target[3])
    params, shift = fit_probe(rng, probe, depth_mm, rel, max_shift_mm, margin_mm, **overrides)
    return params, cx + shift


def union_bounds(*bounds: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """The smallest (xmin, zmin, xmax, zmax) rectangle holding every one of `bounds`."""
    arr = np.array(bounds, dtype=np.float64)
    return (float(arr[:, 0].min()), float(arr[:, 1].min()), float(arr[:, 2].max()), float(arr[:, 3].max()))


def assemble(
    background: Tissue,
    params: ImagingParams,
    wall: list[LayerSpec] | None,
    parts: TissueModel,
    section: LesionSection | None,
    shift: float,
    rng: np.random.Generator,
) -> tuple[TissueModel, LesionSection | None]:
    """The image's tissue model: body wall under the probe, the patient-frame anatomy moved by
    -shift (the probe sits at x = shift), the lesion painted last."""
    model = TissueModel(background)
    if wall:
        add_body_wall(model, params, wall, rng)
    for layer in parts.layers:
        model.add(moved(layer.shape, -shift, 0.0), layer.tissue)
    return model, paint_lesion(model, section, shift)


def paint_lesion(model: TissueModel, section: LesionSection | None, shift: float) -> LesionSection | None:
    """Paint the lesion over `model`, last, seen from the probe at x = shift; returns it moved so."""
    if section is None:
        return None
    section = section.shift(-shift, 0.0)
    model.layers.extend(section.layers)
    return section
