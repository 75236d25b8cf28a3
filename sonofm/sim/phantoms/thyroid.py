"""Thyroid phantom (linear probe): lobes, isthmus, trachea with its shadow, carotid and jugular
beside; TI-RADS nodules (composition, echogenicity, shape, margin, echogenic foci)."""

from __future__ import annotations

import numpy as np

from sonofm.sim.phantoms.anatomy import ORGAN_LABEL
from sonofm.sim.phantoms.base import simulator
from sonofm.sim.phantoms.lesion_section import Parenchyma, build_section
from sonofm.sim.phantoms.lesions import lesion_catalogue, sample_lesion
from sonofm.sim.phantoms.neck import (
    THYROID_ATT,
    THYROID_DB,
    neck_transverse,
    sample_neck,
    thyroid_longitudinal,
)
from sonofm.sim.phantoms.placement import fit_probe, paint_lesion
from sonofm.sim.phantoms.plan import PatientPlan, Scene, image_planes, sample_sex
from sonofm.sim.registry import register

NORMAL_P = 0.15
DEPTH_MM = (35.0, 50.0)

CATALOGUE = lesion_catalogue("thyroid")

MIN_TOP_MM = 0.3  # shallowest depth of a lesion's extent: just below the skin surface


def plan_thyroid(rng: np.random.Generator, size: int) -> PatientPlan:
    sex = sample_sex(rng, 0.75)
    spec = None if rng.random() < NORMAL_P else sample_lesion(rng, CATALOGUE)
    ete = spec is not None and "extrathyroidal_extension" in spec.margins
    if spec is not None:
        aw, al, ah = spec.semi_axes_mm
        neck = sample_neck(rng, (aw * 1.1 + 2.0, ah * (0.55 if ete else 1.1) + 1.5, al * 1.1 + 4.0))
    else:
        neck = sample_neck(rng)
    side = 1 if rng.random() < 0.5 else -1
    u = rng.uniform(-1, 1, size=3)
    if spec is not None:
        aw, al, ah = spec.semi_axes_mm
        dz = (
            (neck.lobe_top + 0.8 * ah - neck.lobe_cz)
            if ete
            else u[1] * max(neck.lobe_rz - ah * 1.1 - 1.5, 0.0)
        )
        dx = u[0] * max(neck.lobe_rx - aw * 1.1 - 2.0, 0.0)
        dl = u[2] * max(neck.lobe_len / 2 - al * 1.1 - 4.0, 0.0)
    else:
        dx = dz = dl = 0.0
    parenchyma = Parenchyma(THYROID_DB, THYROID_ATT)
    if ete:
        # A large nodule's extrathyroidal bulge can reach past the skin (z < 0), where no fan can
        # image it (params_for_target then fails). Keep it >= MIN_TOP_MM deep in both planes by
        # moving the nodule deeper; it still breaks through the anterior capsule.
        cz = neck.lobe_cz + dz
        top = min(
            build_section(spec, "transverse", 0.0, cz, parenchyma).extent()[1],
            build_section(spec, "longitudinal", 0.0, cz, parenchyma).extent()[1],
        )
        dz += max(MIN_TOP_MM - top, 0.0)
    scenes = []
    for plane in image_planes(rng):
        if plane == "transverse":
            cx, cz = side * neck.lobe_x + dx, neck.lobe_cz + dz
            probe0 = cx if spec is not None else (0.0 if rng.random() < 0.5 else cx)
        else:
            cx, cz = dl, neck.lobe_cz + dz
            probe0 = cx
        section = build_section(spec, plane, cx - probe0, cz, parenchyma) if spec is not None else None
        bounds = section.extent() if section is not None else (-8.0, cz - 8.0, 8.0, cz + 8.0)
        params, shift = fit_probe(rng, "linear", DEPTH_MM, bounds, 6.0)
        probe = probe0 + shift
        if plane == "transverse":
            model = neck_transverse(neck, probe, thyroid_label=ORGAN_LABEL)
        else:
            model = thyroid_longitudinal(neck, probe, thyroid_label=ORGAN_LABEL)
        section = paint_lesion(model, section, shift)
        scenes.append(Scene(plane, params, model, section))
    return PatientPlan("thyroid", "thyroid", sex, CATALOGUE, spec, scenes)


simulate_thyroid = register("thyroid")(simulator(plan_thyroid))
