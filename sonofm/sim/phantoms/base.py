"""From a planned patient (anatomy + lesion per imaging plane) to `SimImage`s with exact labels.

A region module plans a patient as a list of `Scene`s (one per image: plane, imaging parameters,
the tissue model with the lesion painted last, extra measurements/landmarks in mm) and calls
`render_patient`. Everything a label says is measured here from the exact geometry of THIS image:
lesion extents (calipers), orientation, the posterior features (attenuation along this probe's
beams at this centre frequency), the bounding box from the rendered label map. Planning happens
before any rendering, so all randomness flows from the one rng in a fixed order (deterministic).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from sonofm.reports.schema import Finding, Study
from sonofm.sim.imaging import ImagingParams, label_map, pixel_grid, sample_imaging_params, world_to_pixel
from sonofm.sim.phantoms.anatomy import LayerSpec, add_body_wall
from sonofm.sim.phantoms.lesion_section import LesionSection, posterior_from_model, section_extent
from sonofm.sim.phantoms.lesions import (
    LesionSpec,
    OrganCatalogue,
    findings_from_tags,
    image_tags,
    normal_findings,
)
from sonofm.sim.phantoms.shapes import moved
from sonofm.sim.physics import render_bmode
from sonofm.sim.probe import inside_fan
from sonofm.sim.tissue import Tissue, TissueModel
from sonofm.sim.types import SimImage
from sonofm.taxonomy.echo import round_measurement
from sonofm.taxonomy.masks import REGION_MASK_LABELS as TAXONOMY_REGION_MASK_LABELS

# Mask label ids each region's label maps can contain: the taxonomy is the one source of truth
# (`sonofm.taxonomy.masks.REGION_MASK_LABELS`); re-exported here for the phantom modules and tests.
REGION_MASK_LABELS = TAXONOMY_REGION_MASK_LABELS


@dataclass
class Scene:
    """One planned image of a patient."""

    plane: str
    params: ImagingParams
    model: TissueModel
    lesion: LesionSection | None = None
    measurements: dict[str, float] = field(default_factory=dict)
    landmarks_mm: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass
class PatientPlan:
    """One patient: who, which organ, the lesion (or None for a normal study) and the images."""

    region: str
    organ: str
    sex: str | None
    catalogue: OrganCatalogue
    spec: LesionSpec | None
    scenes: list[Scene]
    study_key: str = "s0"


def sample_sex(rng: np.random.Generator, p_female: float) -> str:
    return "F" if rng.random() < p_female else "M"


def n_images(rng: np.random.Generator, lo: int = 2, hi: int = 4) -> int:
    return int(rng.integers(lo, hi + 1))


def plane_sequence(rng: np.random.Generator, n: int) -> list[str]:
    """Transverse and longitudinal first, then further views of either plane."""
    planes = ["transverse", "longitudinal"]
    rng.shuffle(planes)
    return [*planes, *(str(p) for p in rng.choice(["transverse", "longitudinal"], size=max(n - 2, 0)))][:n]


def image_planes(rng: np.random.Generator, lo: int = 2, hi: int = 4) -> list[str]:
    """The scan plane of each of one patient's images: `n_images` of them in `plane_sequence` order."""
    return plane_sequence(rng, n_images(rng, lo, hi))


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


def _pixel(params: ImagingParams, size: int, x: float, z: float) -> tuple[float, float]:
    col, row = world_to_pixel(params, size, x, z)
    return (round(float(col), 3), round(float(row), 3))


def _measure_lesion(
    scene: Scene, spec: LesionSpec, size: int, mask: np.ndarray
) -> tuple[
    dict[str, float], dict[str, tuple[float, float]], list[tuple[float, float, float, float]], list[Finding]
]:
    sec = scene.lesion
    assert sec is not None
    x0, z0, x1, z1 = section_extent(sec)
    width, height = x1 - x0, z1 - z0
    xm, zm = 0.5 * (x0 + x1), 0.5 * (z0 + z1)
    horiz = "lesion_width_mm" if scene.plane == "transverse" else "lesion_length_mm"
    meas = {horiz: round(width, 2), "lesion_height_mm": round(height, 2)}
    lm = {
        "lesion_center": _pixel(scene.params, size, xm, zm),
        f"{horiz[:-3]}_p1": _pixel(scene.params, size, x0, zm),
        f"{horiz[:-3]}_p2": _pixel(scene.params, size, x1, zm),
        "lesion_height_p1": _pixel(scene.params, size, xm, z0),
        "lesion_height_p2": _pixel(scene.params, size, xm, z1),
    }
    rows, cols = np.nonzero(mask == sec.label)
    if rows.size == 0:
        # A lesion thinner than a pixel can fall between pixel centres: rasterise it conservatively
        # as the pixel that holds its centre, so every lesion the report describes is in the mask.
        col, row = (int(np.clip(np.rint(v), 0, size - 1)) for v in world_to_pixel(scene.params, size, xm, zm))
        mask[row, col] = sec.label
        rows, cols = np.array([row]), np.array([col])
    bbox = [(float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1))]
    posterior = posterior_from_model(scene.model, sec, scene.params).labels
    tags = image_tags(spec, width, height, posterior)
    return meas, lm, bbox, findings_from_tags(tags)


def render_patient(plan: PatientPlan, rng: np.random.Generator, size: int) -> list[SimImage]:
    """Render every scene of `plan` and attach its exact ground truth."""
    out = []
    for scene in plan.scenes:
        bm = render_bmode(scene.model, scene.params, size, rng)
        mask = label_map(scene.model, scene.params, size)
        _, _, spacing, _ = pixel_grid(scene.params, size)
        measurements = dict(scene.measurements)
        landmarks = {k: _pixel(scene.params, size, x, z) for k, (x, z) in scene.landmarks_mm.items()}
        bboxes: list[tuple[float, float, float, float]] = []
        if plan.spec is not None and scene.lesion is not None:
            meas, lm, bboxes, findings = _measure_lesion(scene, plan.spec, size, mask)
            measurements.update(meas)
            landmarks.update(lm)
            diagnosis, malignant = plan.spec.diagnosis, plan.spec.malignant
        else:
            findings = normal_findings(plan.catalogue)
            diagnosis = "normal"
            malignant = None if plan.catalogue.malignant_prevalence is None else False
        # `view` is reserved for standard echo views (the report writer and view losses key on it);
        # the scan plane of a lesion image travels in `imaging["plane"]`.
        # The study holds measurements at the taxonomy's reporting precision (what a report states
        # and a parser reads back, e.g. 9.4 mm, not 9.36): ground truth and caption agree exactly.
        study = Study(
            region=plan.region,
            organ=plan.organ,
            view=None,
            sex=plan.sex,
            findings=findings,
            measurements={k: round_measurement(k, v) for k, v in measurements.items()},
        )
        out.append(
            SimImage(
                image=bm.image,
                mask=mask,
                fan_mask=bm.fan_mask,
                study=study,
                region=plan.region,
                organ=plan.organ,
                diagnosis=diagnosis,
                malignant=malignant,
                pixel_spacing_mm=float(spacing),
                imaging={**scene.params.to_dict(), "plane": scene.plane},
                study_key=plan.study_key,
                view=None,
                frame=None,
                landmarks=landmarks,
                bboxes=bboxes,
            )
        )
    return out


PlanFn = Callable[[np.random.Generator, int], PatientPlan]


def simulator(plan_fn: PlanFn) -> Callable[[np.random.Generator, int], list[SimImage]]:
    """Turn a planner into a region simulator `fn(rng, size) -> list[SimImage]`."""

    def simulate(rng: np.random.Generator, size: int) -> list[SimImage]:
        return render_patient(plan_fn(rng, size), rng, size)

    simulate.__name__ = f"simulate_{plan_fn.__name__.removeprefix('plan_')}"
    simulate.__doc__ = f"All images of one simulated patient ({plan_fn.__name__}); randomness only from rng."
    return simulate
