"""Thyroid phantom (linear probe): lobes, isthmus, trachea with its shadow, carotid and jugular
beside; TI-RADS nodules (composition, echogenicity, shape, margin, echogenic foci)."""

from __future__ import annotations

import numpy as np

from sonofm.sim.phantoms.anatomy import ORGAN_LABEL
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
from sonofm.sim.phantoms.lesion_section import Parenchyma, build_section
from sonofm.sim.phantoms.lesions import LesionKind, OrganCatalogue, sample_lesion
from sonofm.sim.phantoms.neck import (
    THYROID_ATT,
    THYROID_DB,
    neck_transverse,
    sample_neck,
    thyroid_longitudinal,
)
from sonofm.sim.registry import register

NORMAL_P = 0.15
DEPTH_MM = (35.0, 50.0)

CATALOGUE = OrganCatalogue(
    organ="thyroid",
    malignant_prevalence=0.15,
    orientation_tags=True,
    normal_lesion_tag="nodule",
    kinds=(
        LesionKind(
            name="benign_nodule",
            diagnosis="nodule",
            malignant=False,
            weight=0.8,
            size_mm=(6.0, 30.0),
            contour={"oval": 0.7, "round": 0.2, "lobulated": 0.1},
            margin={"circumscribed": 0.75, "indistinct": 0.2, "irregular": 0.05},
            echogenicity={"isoechoic": 0.45, "hyperechoic": 0.25, "hypoechoic": 0.25, "heterogeneous": 0.05},
            composition={"solid": 0.3, "mixed_cystic_solid": 0.4, "spongiform": 0.3},
            features={"macrocalcifications": 0.1, "rim_calcifications": 0.05, "comet_tail": 0.2},
            posterior={"none": 0.7, "enhancement": 0.3},
            vascularity={"peripheral": 0.45, "avascular": 0.3, "minimal": 0.2, "internal": 0.05},
        ),
        LesionKind(
            name="colloid_cyst",
            diagnosis="cyst",
            malignant=False,
            weight=0.2,
            size_mm=(4.0, 20.0),
            contour={"oval": 0.6, "round": 0.4},
            margin={"circumscribed": 1.0},
            echogenicity={"anechoic": 1.0},
            composition={"cystic": 1.0},
            features={"comet_tail": 0.5, "debris": 0.25, "septations": 0.1},
            posterior={"enhancement": 1.0},
            vascularity={"avascular": 0.9, "peripheral": 0.1},
        ),
        LesionKind(
            name="papillary_carcinoma",
            diagnosis="nodule",
            malignant=True,
            weight=0.8,
            size_mm=(5.0, 25.0),
            contour={"irregular": 0.45, "oval": 0.3, "round": 0.1, "lobulated": 0.15},
            margin={
                "irregular": 0.25,
                "microlobulated": 0.15,
                "angular": 0.1,
                "spiculated": 0.1,
                "indistinct": 0.15,
                "extrathyroidal_extension": 0.15,
                "circumscribed": 0.1,
            },
            echogenicity={"very_hypoechoic": 0.3, "hypoechoic": 0.6, "isoechoic": 0.1},
            composition={"solid": 0.92, "mixed_cystic_solid": 0.08},
            features={"microcalcifications": 0.6, "macrocalcifications": 0.1, "rim_calcifications": 0.05},
            posterior={"none": 0.55, "shadowing": 0.4, "combined": 0.05},
            vascularity={
                "internal": 0.5,
                "hypervascular": 0.2,
                "minimal": 0.15,
                "peripheral": 0.1,
                "avascular": 0.05,
            },
            orientation={"taller": 0.5, "parallel": 0.5},
        ),
        LesionKind(
            name="follicular_carcinoma",
            diagnosis="nodule",
            malignant=True,
            weight=0.2,
            size_mm=(10.0, 30.0),
            contour={"oval": 0.5, "round": 0.3, "lobulated": 0.2},
            margin={"circumscribed": 0.4, "indistinct": 0.3, "microlobulated": 0.3},
            echogenicity={"isoechoic": 0.4, "hypoechoic": 0.4, "heterogeneous": 0.2},
            composition={"solid": 1.0},
            features={"macrocalcifications": 0.1},
            posterior={"none": 0.8, "enhancement": 0.2},
            vascularity={"hypervascular": 0.4, "internal": 0.4, "peripheral": 0.2},
        ),
    ),
)

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
    for plane in plane_sequence(rng, n_images(rng, 2, 4)):
        if plane == "transverse":
            cx, cz = side * neck.lobe_x + dx, neck.lobe_cz + dz
            probe0 = cx if spec is not None else (0.0 if rng.random() < 0.5 else cx)
        else:
            cx, cz = dl, neck.lobe_cz + dz
            probe0 = cx
        section = build_section(spec, plane, cx - probe0, cz, parenchyma) if spec is not None else None
        bounds = section.extent() if section is not None else (-8.0, cz - 8.0, 8.0, cz + 8.0)
        params = params_for_target(rng, "linear", DEPTH_MM, bounds)
        shift = choose_shift(rng, params, bounds, 6.0)
        probe = probe0 + shift
        if plane == "transverse":
            model = neck_transverse(neck, probe, thyroid_label=ORGAN_LABEL)
        else:
            model = thyroid_longitudinal(neck, probe, thyroid_label=ORGAN_LABEL)
        if section is not None:
            section = section.shift(-shift, 0.0)
            model.layers.extend(section.layers)
        scenes.append(Scene(plane, params, model, section))
    return PatientPlan("thyroid", "thyroid", sex, CATALOGUE, spec, scenes)


simulate_thyroid = register("thyroid")(simulator(plan_thyroid))
