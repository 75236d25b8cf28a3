"""From a planned patient (anatomy + lesion per imaging plane) to `SimImage`s with exact labels.

A region module plans a patient as a list of `Scene`s (`plan`: one per image: plane, imaging
parameters, the tissue model with the lesion painted last, extra measurements/landmarks in mm;
`placement` puts the probe and assembles the model) and calls `render_patient`. Everything a
label says is measured here from the exact geometry of THIS image: lesion extents (calipers),
orientation, the posterior features (attenuation along this probe's beams at this centre
frequency), the bounding box from the rendered label map. Planning happens before any rendering,
so all randomness flows from the one rng in a fixed order (deterministic). With the opt-in realism
knob ``domain_randomization`` each scene is first randomised from its own stream
(`lesion_randomization.randomize_scene`: scanner and lesion rendering nuisances that keep every
label) and then rendered and measured as usual.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sonofm.reports.schema import Finding, Study
from sonofm.sim.domain_randomization import image_rng
from sonofm.sim.imaging import ImagingParams, label_map, pixel_grid, world_to_pixel
from sonofm.sim.phantoms.lesion_randomization import RandomizedScene, randomize_scene
from sonofm.sim.phantoms.lesion_section import posterior_from_model, section_extent
from sonofm.sim.phantoms.lesions import LesionSpec, findings_from_tags, image_tags, normal_findings
from sonofm.sim.phantoms.plan import PatientPlan, Scene
from sonofm.sim.physics import render_bmode
from sonofm.sim.types import SimImage
from sonofm.taxonomy.echo import round_measurement
from sonofm.taxonomy.masks import REGION_MASK_LABELS as TAXONOMY_REGION_MASK_LABELS

# Mask label ids each region's label maps can contain: the taxonomy is the one source of truth
# (`sonofm.taxonomy.masks.REGION_MASK_LABELS`); re-exported here for the phantom modules and tests.
REGION_MASK_LABELS = TAXONOMY_REGION_MASK_LABELS


def _pixel(params: ImagingParams, size: int, x: float, z: float) -> tuple[float, float]:
    col, row = world_to_pixel(params, size, x, z)
    return (round(float(col), 3), round(float(row), 3))


def _measure_lesion(
    scene: Scene,
    spec: LesionSpec,
    size: int,
    mask: np.ndarray,
    measured: RandomizedScene | None = None,
) -> tuple[
    dict[str, float], dict[str, tuple[float, float]], list[tuple[float, float, float, float]], list[Finding]
]:
    """Calipers, landmarks, bbox and findings of this image's lesion. `measured`: the extent and
    posterior profile domain randomisation already measured on this scene's lesion (the extent on
    its geometry before the outline blur, which moves no mask pixel), so they are not redone."""
    sec = scene.lesion
    assert sec is not None
    extent = measured.extent if measured is not None else None
    x0, z0, x1, z1 = extent if extent is not None else section_extent(sec)
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
    profile = measured.posterior if measured is not None else None
    if profile is None:
        profile = posterior_from_model(scene.model, sec, scene.params)
    posterior = profile.labels
    tags = image_tags(spec, width, height, posterior)
    return meas, lm, bbox, findings_from_tags(tags)


def render_patient(plan: PatientPlan, rng: np.random.Generator, size: int) -> list[SimImage]:
    """Render every scene of `plan` and attach its exact ground truth."""
    out = []
    for k, scene in enumerate(plan.scenes):
        randomized = None
        dr_rng = image_rng(k)  # None unless the opt-in realism knob `domain_randomization` is on
        if dr_rng is not None:
            randomized = randomize_scene(scene, plan.spec, dr_rng)
            scene = randomized.scene
        bm = render_bmode(scene.model, scene.params, size, rng)
        mask = label_map(scene.model, scene.params, size)
        _, _, spacing, _ = pixel_grid(scene.params, size)
        measurements = dict(scene.measurements)
        landmarks = {k: _pixel(scene.params, size, x, z) for k, (x, z) in scene.landmarks_mm.items()}
        bboxes: list[tuple[float, float, float, float]] = []
        if plan.spec is not None and scene.lesion is not None:
            meas, lm, bboxes, findings = _measure_lesion(scene, plan.spec, size, mask, randomized)
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
        imaging = {**scene.params.to_dict(), "plane": scene.plane}
        if randomized is not None and randomized.info is not None:
            imaging["lesion_randomization"] = randomized.info
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
                imaging=imaging,
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
