"""Breast phantom (linear probe): skin, subcutaneous fat crossed by Cooper's ligaments,
fibroglandular tissue, retromammary fat, pectoralis muscle and ribs; BI-RADS masses and cysts.

Lesion echogenicity is relative to subcutaneous fat, as BI-RADS defines it.
"""

from __future__ import annotations

import numpy as np

from sonofm.sim.phantoms.anatomy import ORGAN_LABEL, LayerSpec, add_body_wall, bright_line, tissue
from sonofm.sim.phantoms.base import (
    PatientPlan,
    Scene,
    choose_shift,
    n_images,
    params_for_target,
    plane_sequence,
    sample_sex,
    simulator,
)
from sonofm.sim.phantoms.lesion_section import PLANES, Parenchyma, build_section
from sonofm.sim.phantoms.lesions import LesionKind, OrganCatalogue, sample_lesion
from sonofm.sim.phantoms.shapes import moved
from sonofm.sim.registry import register
from sonofm.sim.tissue import Ellipse, TissueModel

FAT_DB = -6.0
NORMAL_P = 0.15
DEPTH_MM = (30.0, 50.0)

CATALOGUE = OrganCatalogue(
    organ="breast",
    malignant_prevalence=0.3,
    orientation_tags=True,
    normal_lesion_tag="mass",
    kinds=(
        LesionKind(
            name="simple_cyst",
            diagnosis="cyst",
            malignant=False,
            weight=0.3,
            size_mm=(5.0, 22.0),
            contour={"oval": 0.7, "round": 0.3},
            margin={"circumscribed": 1.0},
            echogenicity={"anechoic": 1.0},
            composition={"cystic": 1.0},
            posterior={"enhancement": 1.0},
            vascularity={"avascular": 1.0},
        ),
        LesionKind(
            name="complicated_cyst",
            diagnosis="cyst",
            malignant=False,
            weight=0.12,
            size_mm=(6.0, 22.0),
            contour={"oval": 0.6, "round": 0.3, "lobulated": 0.1},
            margin={"circumscribed": 0.8, "indistinct": 0.1, "microlobulated": 0.1},
            echogenicity={"anechoic": 1.0},
            composition={"cystic": 0.6, "mixed_cystic_solid": 0.4},
            features={"debris": 0.6, "septations": 0.35},
            posterior={"enhancement": 1.0},
            vascularity={"avascular": 0.7, "peripheral": 0.3},
        ),
        LesionKind(
            name="fibroadenoma",
            diagnosis="mass",
            malignant=False,
            weight=0.5,
            size_mm=(8.0, 28.0),
            contour={"oval": 0.7, "round": 0.1, "lobulated": 0.2},
            margin={"circumscribed": 0.85, "microlobulated": 0.05, "indistinct": 0.1},
            echogenicity={"hypoechoic": 0.6, "isoechoic": 0.25, "heterogeneous": 0.1, "hyperechoic": 0.05},
            composition={"solid": 1.0},
            features={"macrocalcifications": 0.08},
            posterior={"none": 0.6, "enhancement": 0.35, "shadowing": 0.05},
            vascularity={"avascular": 0.4, "minimal": 0.3, "peripheral": 0.25, "internal": 0.05},
            orientation={"parallel": 0.95, "taller": 0.05},
        ),
        LesionKind(
            name="invasive_carcinoma",
            diagnosis="mass",
            malignant=True,
            weight=0.8,
            size_mm=(8.0, 28.0),
            contour={"irregular": 0.65, "round": 0.1, "oval": 0.1, "lobulated": 0.15},
            margin={
                "spiculated": 0.3,
                "angular": 0.2,
                "microlobulated": 0.2,
                "indistinct": 0.25,
                "circumscribed": 0.05,
            },
            echogenicity={
                "hypoechoic": 0.55,
                "very_hypoechoic": 0.1,
                "heterogeneous": 0.25,
                "isoechoic": 0.1,
            },
            composition={"solid": 0.9, "mixed_cystic_solid": 0.1},
            features={"microcalcifications": 0.45, "macrocalcifications": 0.05},
            posterior={"shadowing": 0.5, "none": 0.3, "enhancement": 0.1, "combined": 0.1},
            vascularity={
                "internal": 0.4,
                "hypervascular": 0.3,
                "peripheral": 0.15,
                "minimal": 0.1,
                "avascular": 0.05,
            },
            orientation={"taller": 0.45, "parallel": 0.55},
        ),
        LesionKind(
            name="circumscribed_carcinoma",
            diagnosis="mass",
            malignant=True,
            weight=0.2,
            size_mm=(10.0, 28.0),
            contour={"round": 0.4, "oval": 0.4, "lobulated": 0.2},
            margin={"circumscribed": 0.3, "microlobulated": 0.4, "indistinct": 0.3},
            echogenicity={"hypoechoic": 0.5, "heterogeneous": 0.3, "very_hypoechoic": 0.2},
            composition={"solid": 0.7, "mixed_cystic_solid": 0.3},
            posterior={"enhancement": 0.7, "none": 0.3},
            vascularity={"internal": 0.5, "hypervascular": 0.3, "peripheral": 0.2},
        ),
    ),
)


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
    for plane in plane_sequence(rng, n_images(rng, 2, 4)):
        prng = np.random.default_rng([anatomy_seed, PLANES.index(plane)])
        section = build_section(spec, plane, 0.0, lesion_cz, parenchyma) if spec is not None else None
        bounds = section.extent() if section is not None else (-5.0, lesion_cz - 5.0, 5.0, lesion_cz + 5.0)
        params = params_for_target(rng, "linear", DEPTH_MM, bounds)
        shift = choose_shift(rng, params, bounds, 8.0)
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
        if section is not None:
            section = section.shift(-shift, 0.0)
            model.layers.extend(section.layers)
        scenes.append(Scene(plane, params, model, section))
    return PatientPlan("breast", "breast", sex, CATALOGUE, spec, scenes)


simulate_breast = register("breast")(simulator(plan_breast))
