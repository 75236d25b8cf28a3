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
    add_vessel_longitudinal,
    body_wall,
    tissue,
    with_label,
)
from sonofm.sim.phantoms.base import simulator
from sonofm.sim.phantoms.lesion_section import PLANES, Parenchyma, build_section
from sonofm.sim.phantoms.lesions import lesion_catalogue, sample_lesion
from sonofm.sim.phantoms.placement import assemble, place_probe, union_bounds
from sonofm.sim.phantoms.plan import PatientPlan, Scene, image_planes
from sonofm.sim.phantoms.shapes import Dots, tight_bounds
from sonofm.sim.registry import register
from sonofm.sim.tissue import Ellipse, StarShape, TissueModel

NORMAL_P = 0.15
DEPTH_MM = (90.0, 140.0)
MYO_DB, MYO_ATT = -2.0, 0.8
OVARY_DB, OVARY_ATT = -3.0, 0.7

OVARY = lesion_catalogue("ovary")

UTERUS = lesion_catalogue("uterus")


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
    for plane in image_planes(rng):
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
            target = union_bounds(target, section.extent())
        params, shift = place_probe(rng, "curvilinear", DEPTH_MM, target, 8.0, margin_mm=3.0)
        model, section = assemble(bowel, params, wall, parts, section, shift, rng)
        scenes.append(Scene(plane, params, model, section))
    return PatientPlan("gynaecology", organ, "F", cat, spec, scenes)


simulate_gynaecology = register("gynaecology")(simulator(plan_gynaecology))
