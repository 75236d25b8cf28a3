"""Breast phantom (linear probe): skin, subcutaneous fat crossed by Cooper's ligaments,
fibroglandular tissue, retromammary fat, pectoralis muscle and ribs; BI-RADS masses and cysts.

Lesion echogenicity is relative to subcutaneous fat, as BI-RADS defines it.
"""

from __future__ import annotations

import numpy as np

from sonofm.sim.phantoms.anatomy import ORGAN_LABEL, LayerSpec, add_body_wall, bright_line, tissue
from sonofm.sim.phantoms.base import simulator
from sonofm.sim.phantoms.lesion_section import PLANES, Parenchyma, build_section
from sonofm.sim.phantoms.lesions import lesion_catalogue, sample_lesion
from sonofm.sim.phantoms.placement import fit_probe, paint_lesion
from sonofm.sim.phantoms.plan import PatientPlan, Scene, image_planes, sample_sex
from sonofm.sim.phantoms.shapes import moved
from sonofm.sim.registry import register
from sonofm.sim.tissue import Ellipse, TissueModel

FAT_DB = -6.0
NORMAL_P = 0.15
DEPTH_MM = (30.0, 50.0)

CATALOGUE = lesion_catalogue("breast")


def plan_breast(rng: np.random.Generator, size: int) -> PatientPlan:
    sex = sample_sex(rng, 0.99)
    spec = None if rng.random() < NORMAL_P else sample_lesion(rng, CATALOGUE)
    anatomy_seed = int(rng.integers(0, 2**31 - 1))
    skin, fat, gland, retro, pect = (
        float(v) for v in rng.uniform([1.5, 4.0, 8.0, 1.0, 5.0], [2.5, 12.0, 18.0, 3.0, 10.0])
    )
    gland_att = float(rng.uniform(0.65, 0.85))
    if spec is not None:
        gland = max(gland, 2.0 * spec.semi_axes_mm[2] + 4.0)
    fat_t = tissue("fat", FAT_DB, 0.5, rng, texture_db=1.5, texture_scale_mm=3.0)
    gland_t = tissue(
        "fibroglandular",
        FAT_DB + float(rng.uniform(6, 10)),
        gland_att,
        rng,
        label=ORGAN_LABEL,
        texture_db=3.0,
        texture_scale_mm=1.5,
    )
    skin_t = tissue("skin", FAT_DB + 12.0, 0.9)
    muscle_t = tissue("pectoralis", FAT_DB - 2.0, 1.0, rng, texture_db=3.0, texture_scale_mm=0.8)
    chest_t = tissue("chest_wall", FAT_DB - 4.0, 1.0)
    rib_t = tissue("rib", FAT_DB + 14.0, 15.0)
    lesion_cz = skin + fat + gland * float(rng.uniform(0.4, 0.6))
    if spec is not None:
        lesion_cz = max(lesion_cz, skin + 2.0 + spec.max_radius_mm)
    parenchyma = Parenchyma(FAT_DB, gland_att)
    wall = [
        LayerSpec(skin, skin_t),
        LayerSpec(fat, fat_t, 0.8),
        LayerSpec(gland, gland_t, 1.2),
        LayerSpec(retro, fat_t, 0.4),
        LayerSpec(pect, muscle_t, 0.4),
    ]
    rib_z = skin + fat + gland + retro + pect + float(rng.uniform(3, 6))
    rib_x0 = float(rng.uniform(-12, 12))

    scenes = []
    for plane in image_planes(rng):
        prng = np.random.default_rng([anatomy_seed, PLANES.index(plane)])
        section = build_section(spec, plane, 0.0, lesion_cz, parenchyma) if spec is not None else None
        bounds = section.extent() if section is not None else (-5.0, lesion_cz - 5.0, 5.0, lesion_cz + 5.0)
        params, shift = fit_probe(rng, "linear", DEPTH_MM, bounds, 8.0)
        model = TissueModel(chest_t)
        add_body_wall(model, params, wall, prng)
        for k in range(-3, 4):  # ribs every ~25 mm below the pectoralis, with their shadows
            model.add(
                moved(Ellipse(rib_x0 + 25.0 * k, rib_z + 3.5, 6.0, 3.5, edge_mm=0.2), -shift, 0.0), rib_t
            )
        for _ in range(int(prng.integers(3, 7))):  # Cooper's ligaments: bright lines through the fat
            x = float(prng.uniform(-40, 40))
            pts = np.array(
                [
                    [x, skin + 0.3],
                    [x + prng.uniform(-6, 6), skin + 0.6 * fat],
                    [x + prng.uniform(-8, 8), skin + fat + 1.0],
                ]
            )
            shape, lig = bright_line(pts, float(prng.uniform(0.3, 0.5)), FAT_DB + 10.0, 0.8)
            model.add(moved(shape, -shift, 0.0), lig)
        section = paint_lesion(model, section, shift)
        scenes.append(Scene(plane, params, model, section))
    return PatientPlan("breast", "breast", sex, CATALOGUE, spec, scenes)


simulate_breast = register("breast")(simulator(plan_breast))
