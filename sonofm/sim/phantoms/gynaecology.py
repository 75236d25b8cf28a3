"""Female pelvis phantom (transabdominal curvilinear probe through a filled bladder).

Uterus: myometrium with the bright endometrial stripe (and its thin hypoechoic halo), long axis
in sagittal views; ovaries: stroma with anechoic follicles, beside the uterus, with the iliac
vessels behind. Lesions (O-RADS-like): functional, haemorrhagic and endometriotic cysts,
cystadenoma, dermoid (shadowing), solid/complex malignant masses; fibroids (with edge
shadowing), endometrial polyps, endometrial carcinoma, fluid in the cavity.
"""

from __future__ import annotations

import numpy as np

from sonofm.sim.phantoms.anatomy import (
    ORGAN_LABEL,
    URINE,
    add_body_wall,
    add_vessel_longitudinal,
    body_wall,
    tissue,
    with_label,
)
from sonofm.sim.phantoms.base import (
    PatientPlan,
    Scene,
    choose_shift,
    n_images,
    params_for_target,
    plane_sequence,
    simulator,
)
from sonofm.sim.phantoms.lesion_section import PLANES, Parenchyma, build_section
from sonofm.sim.phantoms.lesions import LesionKind, OrganCatalogue, sample_lesion
from sonofm.sim.phantoms.shapes import Dots, moved, tight_bounds
from sonofm.sim.registry import register
from sonofm.sim.tissue import Ellipse, StarShape, TissueModel

NORMAL_P = 0.15
DEPTH_MM = (90.0, 140.0)
MYO_DB, MYO_ATT = -2.0, 0.8
OVARY_DB, OVARY_ATT = -3.0, 0.7

OVARY = OrganCatalogue(
    organ="ovary",
    malignant_prevalence=0.15,
    normal_lesion_tag="mass",
    kinds=(
        LesionKind(
            name="functional_cyst",
            diagnosis="cyst",
            malignant=False,
            weight=0.35,
            size_mm=(20.0, 50.0),
            contour={"round": 0.6, "oval": 0.4},
            margin={"circumscribed": 1.0},
            echogenicity={"anechoic": 1.0},
            composition={"cystic": 1.0},
            posterior={"enhancement": 1.0},
            vascularity={"avascular": 0.8, "peripheral": 0.2},
        ),
        LesionKind(
            name="haemorrhagic_cyst",
            diagnosis="cyst",
            malignant=False,
            weight=0.2,
            size_mm=(20.0, 45.0),
            contour={"round": 0.5, "oval": 0.5},
            margin={"circumscribed": 1.0},
            echogenicity={"anechoic": 1.0},
            composition={"cystic": 1.0},
            features={"debris": 0.95, "septations": 0.4},
            posterior={"enhancement": 1.0},
            vascularity={"peripheral": 0.7, "avascular": 0.3},
        ),
        LesionKind(
            name="endometrioma",
            diagnosis="cyst",
            malignant=False,
            weight=0.15,
            size_mm=(20.0, 50.0),
            contour={"round": 0.5, "oval": 0.5},
            margin={"circumscribed": 1.0},
            echogenicity={"anechoic": 1.0},
            composition={"cystic": 1.0},
            features={"debris": 1.0},
            posterior={"enhancement": 1.0},
            vascularity={"avascular": 0.6, "peripheral": 0.4},
        ),
        LesionKind(
            name="cystadenoma",
            diagnosis="cyst",
            malignant=False,
            weight=0.15,
            size_mm=(30.0, 60.0),
            contour={"oval": 0.6, "round": 0.2, "lobulated": 0.2},
            margin={"circumscribed": 1.0},
            echogenicity={"anechoic": 1.0},
            composition={"cystic": 1.0},
            features={"septations": 0.85},
            posterior={"enhancement": 1.0},
            vascularity={"avascular": 0.6, "minimal": 0.4},
        ),
        LesionKind(
            name="dermoid",
            diagnosis="mass",
            malignant=False,
            weight=0.15,
            size_mm=(20.0, 50.0),
            contour={"round": 0.5, "oval": 0.5},
            margin={"circumscribed": 0.8, "indistinct": 0.2},
            echogenicity={"hyperechoic": 0.6, "heterogeneous": 0.4},
            composition={"solid": 0.5, "mixed_cystic_solid": 0.5},
            features={"macrocalcifications": 0.6, "rim_calcifications": 0.1},
            posterior={"shadowing": 0.7, "none": 0.3},
            vascularity={"avascular": 0.9, "minimal": 0.1},
        ),
        LesionKind(
            name="ovarian_carcinoma",
            diagnosis="mass",
            malignant=True,
            weight=1.0,
            size_mm=(35.0, 70.0),
            contour={"irregular": 0.6, "lobulated": 0.3, "oval": 0.1},
            margin={"irregular": 0.4, "indistinct": 0.4, "microlobulated": 0.2},
            echogenicity={"heterogeneous": 0.5, "hypoechoic": 0.3, "isoechoic": 0.2},
            composition={"mixed_cystic_solid": 0.65, "solid": 0.35},
            features={"septations": 0.5},
            posterior={"none": 0.6, "enhancement": 0.4},
            vascularity={"internal": 0.5, "hypervascular": 0.4, "peripheral": 0.1},
        ),
    ),
)

UTERUS = OrganCatalogue(
    organ="uterus",
    malignant_prevalence=0.08,
    normal_lesion_tag="mass",
    kinds=(
        LesionKind(
            name="fibroid",
            diagnosis="mass",
            malignant=False,
            weight=0.7,
            size_mm=(10.0, 50.0),
            contour={"round": 0.5, "oval": 0.4, "lobulated": 0.1},
            margin={"circumscribed": 0.85, "indistinct": 0.15},
            echogenicity={"hypoechoic": 0.5, "heterogeneous": 0.3, "isoechoic": 0.2},
            composition={"solid": 1.0},
            features={"macrocalcifications": 0.15},
            posterior={"shadowing": 0.45, "none": 0.55},
            vascularity={"peripheral": 0.6, "minimal": 0.2, "internal": 0.2},
        ),
        LesionKind(
            name="endometrial_polyp",
            diagnosis="nodule",
            malignant=False,
            weight=0.2,
            size_mm=(5.0, 15.0),
            contour={"oval": 0.7, "round": 0.3},
            margin={"circumscribed": 1.0},
            echogenicity={"hyperechoic": 0.8, "isoechoic": 0.2},
            composition={"solid": 0.85, "mixed_cystic_solid": 0.15},
            posterior={"none": 1.0},
            vascularity={"minimal": 0.5, "internal": 0.3, "avascular": 0.2},
        ),
        LesionKind(
            name="cavity_fluid",
            diagnosis="fluid_collection",
            malignant=False,
            weight=0.1,
            size_mm=(6.0, 20.0),
            contour={"oval": 1.0},
            margin={"circumscribed": 1.0},
            echogenicity={"anechoic": 1.0},
            composition={"cystic": 1.0},
            features={"debris": 0.5},
            posterior={"enhancement": 1.0},
            vascularity={"avascular": 1.0},
        ),
        LesionKind(
            name="endometrial_carcinoma",
            diagnosis="mass",
            malignant=True,
            weight=1.0,
            size_mm=(12.0, 35.0),
            contour={"irregular": 0.7, "lobulated": 0.3},
            margin={"indistinct": 0.6, "irregular": 0.4},
            echogenicity={"heterogeneous": 0.6, "hyperechoic": 0.2, "isoechoic": 0.2},
            composition={"solid": 1.0},
            posterior={"none": 1.0},
            vascularity={"internal": 0.6, "hypervascular": 0.4},
        ),
    ),
)


def plan_gynaecology(rng: np.random.Generator, size: int) -> PatientPlan:
    organ = "ovary" if rng.random() < 0.6 else "uterus"
    cat = OVARY if organ == "ovary" else UTERUS
    spec = None if rng.random() < NORMAL_P else sample_lesion(rng, cat)
    wall = body_wall(rng, fat=(5.0, 20.0), muscle=(6.0, 10.0), muscle_name="rectus", peritoneum=False)
    wd = sum(w.thickness_mm for w in wall)
    u = rng.uniform(size=16)
    seed = int(rng.integers(0, 2**31 - 1))
    # bladder (acoustic window) under the wall, uterus behind it, ovaries beside the uterus
    bl = (30.0 + 10.0 * u[0], 12.0 + 10.0 * u[1])
    bl_c = (0.0, wd + 2.5 + bl[1])
    ut_len, ut_w, ut_ap = 35.0 + 10.0 * u[2], 22.0 + 6.0 * u[3], 16.0 + 6.0 * u[4]
    endo = 2.0 + 4.0 * u[5]
    ov = [12.0 + 6.0 * u[6], 9.0 + 4.0 * u[7]]
    if spec is not None:
        aw, al, ah = spec.semi_axes_mm
        if organ == "ovary":
            ov = [max(ov[0], max(aw, al) * 1.05 + 3.0), max(ov[1], ah * 1.05 + 2.5)]
        elif spec.kind == "fibroid":
            ut_ap = max(ut_ap, ah * 1.3 + 6.0)
            ut_w = max(ut_w, aw * 1.2 + 6.0)
            ut_len = max(ut_len, al * 1.2 + 10.0)
        else:
            endo = max(endo, ah + 0.8)
    ut_c = (0.0, bl_c[1] + bl[1] + 4.0 + ut_ap)
    ut_tilt = -10.0 - 20.0 * u[8]
    side = 1.0 if u[9] < 0.5 else -1.0
    ov_c = (side * (ut_w + ov[0] + 4.0), ut_c[1] + 4.0 * (u[10] - 0.5))
    myo = tissue(
        "myometrium",
        MYO_DB,
        MYO_ATT,
        rng,
        label=ORGAN_LABEL if organ == "uterus" else None,
        texture_db=2.0,
        texture_scale_mm=2.0,
    )
    endo_t = tissue(
        "endometrium",
        6.0,
        0.8,
        rng,
        label=ORGAN_LABEL if organ == "uterus" else None,
        texture_db=1.5,
        texture_scale_mm=1.5,
    )
    halo = tissue("junctional_zone", -8.0, 0.8, label=ORGAN_LABEL if organ == "uterus" else None)
    stroma = tissue(
        "ovarian_stroma",
        OVARY_DB,
        OVARY_ATT,
        rng,
        label=ORGAN_LABEL if organ == "ovary" else None,
        texture_db=1.5,
        texture_scale_mm=1.5,
    )
    follicle = with_label(URINE, ORGAN_LABEL if organ == "ovary" else None)
    bowel = tissue("pelvic_soft_tissue", -8.0, 0.7, rng, texture_db=4.0, texture_scale_mm=3.0)
    scenes = []
    for plane in plane_sequence(rng, n_images(rng, 2, 4)):
        prng = np.random.default_rng([seed, PLANES.index(plane)])
        parts = TissueModel(bowel)
        bl_rx = bl[0] * (1.2 if plane == "transverse" else 1.0)
        parts.add(
            StarShape(bl_c[0], bl_c[1], bl_rx + 3.0, bl[1] + 3.0, harmonics=((4, 0.04, 0.8),), edge_mm=0.3),
            tissue("bladder_wall", 3.0, 0.9),
        )
        parts.add(StarShape(bl_c[0], bl_c[1], bl_rx, bl[1], harmonics=((4, 0.04, 0.8),), edge_mm=0.3), URINE)
        if plane == "longitudinal":  # sagittal uterus; the ovary plane is oblique along the ovary
            u_rx, u_ang = ut_len, ut_tilt
        else:
            u_rx, u_ang = ut_w, float(prng.uniform(-5, 5))
        uterus = StarShape(
            ut_c[0],
            ut_c[1],
            u_rx,
            ut_ap,
            angle_deg=u_ang,
            harmonics=((2, 0.05, 0.0), (3, 0.04, float(prng.uniform(0, 6.3)))),
            edge_mm=0.4,
        )
        endo_rx = 0.65 * u_rx if plane == "longitudinal" else 0.45 * u_rx
        show_uterus = organ == "uterus" or plane == "transverse"
        if show_uterus:
            parts.add(uterus, myo)
            parts.add(
                Ellipse(ut_c[0], ut_c[1], endo_rx + 1.0, endo + 1.0, angle_deg=u_ang, edge_mm=0.3), halo
            )
            parts.add(Ellipse(ut_c[0], ut_c[1], endo_rx, endo, angle_deg=u_ang, edge_mm=0.3), endo_t)
        o_c = ov_c if (organ == "uterus" or plane == "transverse") else (0.0, ut_c[1])
        o_rx = ov[0] * (1.0 if plane == "transverse" else 1.25)
        ovary = StarShape(
            o_c[0],
            o_c[1],
            o_rx,
            ov[1],
            angle_deg=float(prng.uniform(-15, 15)),
            harmonics=((2, 0.05, 0.3),),
            edge_mm=0.4,
        )
        if organ == "ovary" or plane == "transverse":
            vz = o_c[1] + ov[1] + 6.0
            add_vessel_longitudinal(
                parts,
                np.array([[o_c[0] - 25.0, vz + 3.0], [o_c[0] + 25.0, vz - 2.0]]),
                float(prng.uniform(3.5, 5.0)),
                0.5,
                tissue("iliac_wall", 6.0, 0.8),
            )
            parts.add(ovary, stroma)
            n_f = int(prng.integers(3, 10))
            phi = prng.uniform(0, 2 * np.pi, n_f)
            rad = prng.uniform(1.5, 4.5, n_f)
            rr = np.clip(prng.uniform(0.3, 0.8, n_f), 0, 1 - rad / min(o_rx, ov[1]))
            parts.add(
                Dots(np.stack([o_c[0] + rr * o_rx * np.cos(phi), o_c[1] + rr * ov[1] * np.sin(phi)], 1), rad),
                follicle,
            )
        section = None
        if spec is not None:
            if organ == "ovary":
                lc = (o_c[0], o_c[1])
                par = Parenchyma(OVARY_DB, OVARY_ATT)
            elif spec.kind == "fibroid":
                ang = np.deg2rad(u_ang)
                off = (u[11] - 0.5) * 0.6 * u_rx
                lc = (ut_c[0] + off * np.cos(ang), ut_c[1] + off * np.sin(ang) + (u[12] - 0.5) * 0.4 * ut_ap)
                par = Parenchyma(MYO_DB, MYO_ATT)
            else:
                ang = np.deg2rad(u_ang)
                off = (u[11] - 0.5) * 0.5 * endo_rx
                lc = (ut_c[0] + off * np.cos(ang), ut_c[1] + off * np.sin(ang))
                par = Parenchyma(MYO_DB, MYO_ATT)
            section = build_section(spec, plane, float(lc[0]), float(lc[1]), par)
        focus_shape = ovary if organ == "ovary" else uterus
        target = tight_bounds(focus_shape, 0.5)
        if section is not None:
            sb = section.extent()
            target = (
                min(target[0], sb[0]),
                min(target[1], sb[1]),
                max(target[2], sb[2]),
                max(target[3], sb[3]),
            )
        cx = 0.5 * (target[0] + target[2])
        target_rel = (target[0] - cx, target[1], target[2] - cx, target[3])
        params = params_for_target(rng, "curvilinear", DEPTH_MM, target_rel, margin_mm=3.0)
        shift = cx + choose_shift(rng, params, target_rel, 8.0, margin_mm=3.0)
        model = TissueModel(bowel)
        add_body_wall(model, params, wall, rng)
        for layer in parts.layers:
            model.add(moved(layer.shape, -shift, 0.0), layer.tissue)
        if section is not None:
            section = section.shift(-shift, 0.0)
            model.layers.extend(section.layers)
        scenes.append(Scene(plane, params, model, section))
    return PatientPlan("gynaecology", organ, "F", cat, spec, scenes)


simulate_gynaecology = register("gynaecology")(simulator(plan_gynaecology))
