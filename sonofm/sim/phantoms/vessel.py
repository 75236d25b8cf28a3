"""Neck vessel phantom (linear probe): common carotid artery with its intima-media complex
(`imt_mm` measured on the far wall in longitudinal views) and carotid plaque; internal jugular
vein with thrombus.

Plaque is labelled 10 (MASK_LABELS "plaque"), lumens 9, the vessel wall of the organ of interest
2. Both lesions carry the taxonomy diagnoses "plaque" and "thrombus" and are reported with their echogenicity,
surface (margin), calcification and shadowing; a normal study states "no plaque"/"no thrombus".
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from sonofm.sim.phantoms.anatomy import ORGAN_LABEL
from sonofm.sim.phantoms.base import simulator
from sonofm.sim.phantoms.lesion_section import Parenchyma, build_section
from sonofm.sim.phantoms.lesions import lesion_catalogue, sample_lesion
from sonofm.sim.phantoms.neck import carotid_longitudinal, neck_transverse, sample_neck
from sonofm.sim.phantoms.placement import fit_probe, paint_lesion
from sonofm.sim.phantoms.plan import PatientPlan, Scene, image_planes, sample_sex
from sonofm.sim.registry import register
from sonofm.sim.tissue import Band, Ellipse

NORMAL_P = 0.2
DEPTH_MM = (30.0, 45.0)
BLOOD_ATT = 0.18

CAROTID = lesion_catalogue("carotid_artery")
JUGULAR = lesion_catalogue("jugular_vein")


def plan_vessel(rng: np.random.Generator, size: int) -> PatientPlan:
    sex = sample_sex(rng, 0.5)
    organ = "carotid_artery" if rng.random() < 0.8 else "jugular_vein"
    cat = CAROTID if organ == "carotid_artery" else JUGULAR
    neck = sample_neck(rng)
    # room for the jugular between the sternocleidomastoid and the carotid in longitudinal views
    scm_bottom = neck.skin + neck.fat + neck.strap + 3.0
    neck = replace(
        neck, car_cz=max(neck.car_cz, scm_bottom + 2.0 * neck.jug_rz + neck.imt + 2.5 + neck.car_r)
    )
    spec = None if rng.random() < NORMAL_P else sample_lesion(rng, cat)
    side = 1 if rng.random() < 0.5 else -1
    far_wall = rng.random() < 0.7
    u = rng.uniform(size=4)
    if spec is not None:
        if organ == "carotid_artery":
            thick = float(np.clip(1.2 + 2.3 * u[0], 1.2, 1.3 * neck.car_r))
            spec = replace(
                spec,
                semi_axes_mm=(0.75 * neck.car_r * (0.7 + 0.3 * u[1]), spec.semi_axes_mm[1], thick),
                tilt_deg=0.0,
                orientation_tags=False,
            )
        else:
            spec = replace(
                spec,
                semi_axes_mm=(
                    neck.jug_rx * (0.5 + 0.35 * u[0]),
                    spec.semi_axes_mm[1],
                    neck.jug_rz * (0.5 + 0.35 * u[1]),
                ),
                tilt_deg=0.0,
                orientation_tags=False,
            )
    parenchyma = Parenchyma(0.0, BLOOD_ATT)
    wall_label = ORGAN_LABEL if organ == "carotid_artery" else None
    jug_label = ORGAN_LABEL if organ == "jugular_vein" else None
    lesion_x = float(rng.uniform(-6, 6))  # along the vessel, in longitudinal views
    scenes = []
    for plane in image_planes(rng):
        measurements: dict[str, float] = {}
        landmarks: dict[str, tuple[float, float]] = {}
        if plane == "transverse":
            if organ == "carotid_artery":
                cx, r_clip = side * neck.car_x, neck.car_r + neck.imt
                cz = neck.car_cz + (neck.car_r if far_wall else -neck.car_r)
                clip = Ellipse(0.0, neck.car_cz, r_clip, r_clip)
                vessel_c = (cx, neck.car_cz)
            else:
                cx, cz = neck.jug_center(side)
                clip = Ellipse(0.0, cz, neck.jug_rx, neck.jug_rz)
                vessel_c = (cx, cz)
            probe0 = cx
            target = (
                vessel_c[0] - probe0 - 8.0,
                vessel_c[1] - 8.0,
                vessel_c[0] - probe0 + 8.0,
                vessel_c[1] + 8.0,
            )
            clip = Ellipse(vessel_c[0] - probe0, vessel_c[1], clip.rx, clip.rz)
            section = (
                build_section(spec, plane, cx - probe0, cz, parenchyma, clip=clip)
                if spec is not None
                else None
            )
            params, shift = fit_probe(rng, "linear", DEPTH_MM, target, 4.0)
            model = neck_transverse(
                neck,
                probe0 + shift,
                thyroid_label=None,
                carotid_wall_label=wall_label,
                jugular_wall_label=jug_label,
            )
            section = paint_lesion(model, section, shift)
        else:
            model, far = carotid_longitudinal(neck, wall_label=wall_label, jugular_wall_label=jug_label)
            near = neck.car_cz - neck.car_r
            if organ == "carotid_artery":
                cz = far if far_wall else near
                clip = Band.flat(-1e3, far + neck.imt) if far_wall else Band.flat(near - neck.imt, 1e3)
            else:
                jz = near - neck.imt - 1.7 - neck.jug_rz
                cz, clip = jz, Band.flat(jz - neck.jug_rz, jz + neck.jug_rz)
            target = (-8.0, max(near - neck.imt - 2.0 * neck.jug_rz - 2.0, 0.5), 8.0, far + neck.imt + 3.0)
            section = (
                build_section(spec, plane, lesion_x, cz, parenchyma, clip=clip) if spec is not None else None
            )
            if section is not None:
                ex = section.extent()
                target = (min(target[0], ex[0]), target[1], max(target[2], ex[2]), target[3])
            params, shift = fit_probe(rng, "linear", DEPTH_MM, target, 4.0)
            section = paint_lesion(model, section, shift)
            if organ == "carotid_artery":
                # IMT on the far wall, away from any plaque
                x_m: float | None = 0.0
                if spec is not None and far_wall:
                    x0, _, x1, _ = section.extent()
                    half = 0.5 * float(params.width_mm or 30.0) - 2.0
                    x_m = x1 + 3.0 if x1 + 3.0 < half else (x0 - 3.0 if x0 - 3.0 > -half else None)
                if x_m is not None:  # (a plaque across the whole view leaves no free wall to measure)
                    measurements["imt_mm"] = round(float(neck.imt), 3)
                    landmarks = {"imt_p1": (x_m, far), "imt_p2": (x_m, far + neck.imt)}
        scenes.append(Scene(plane, params, model, section, measurements, landmarks))
    return PatientPlan("vessel", organ, sex, cat, spec, scenes)


simulate_vessel = register("vessel")(simulator(plan_vessel))
