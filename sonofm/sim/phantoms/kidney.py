"""Kidney and bladder phantom (curvilinear probe).

Kidney: body wall, liver above (right flank window), perirenal fat, a bright capsule, hypoechoic
cortex, darker medullary pyramids around an echogenic sinus (fat) that opens medially at the
hilum in transverse views; `kidney_length_mm` (pole to pole) is measured in longitudinal views.
Lesions: cortical cysts, angiomyolipoma, stones and hydronephrosis in the sinus, renal cell
carcinoma. Bladder: an anechoic urine-filled sac with a muscular wall behind the abdominal wall;
urothelial tumours on the wall, stones and clots in the dependent part.
"""

from __future__ import annotations

import numpy as np

from sonofm.sim.phantoms.anatomy import (
    ORGAN_LABEL,
    URINE,
    add_body_wall,
    body_wall,
    tissue,
    with_label,
)
from sonofm.sim.phantoms.base import simulator
from sonofm.sim.phantoms.lesion_section import PLANES, Parenchyma, build_section
from sonofm.sim.phantoms.lesions import lesion_catalogue, sample_lesion
from sonofm.sim.phantoms.placement import assemble, fit_probe, paint_lesion, union_bounds
from sonofm.sim.phantoms.plan import PatientPlan, Scene, image_planes, sample_sex
from sonofm.sim.phantoms.shapes import moved, tight_bounds
from sonofm.sim.registry import register
from sonofm.sim.tissue import Band, Ellipse, StarShape, TissueModel

NORMAL_P = 0.15
KIDNEY_DEPTH_MM = (110.0, 160.0)
BLADDER_DEPTH_MM = (100.0, 150.0)
CORTEX_DB, CORTEX_ATT = -4.0, 0.8

KIDNEY = lesion_catalogue("kidney")

BLADDER = lesion_catalogue("bladder")


def _kidney_parts(
    plane: str,
    c: tuple[float, float],
    axes: tuple[float, float, float],
    tilt: float,
    seed: int,
    label: int | None,
) -> tuple[TissueModel, Ellipse]:
    """Capsule, cortex, pyramids and sinus of one kidney cut by `plane`; returns (parts, cortex outline)."""
    rng = np.random.default_rng([seed, PLANES.index(plane)])
    half_len, half_w, half_ap = axes
    rx = half_len if plane == "longitudinal" else half_w
    rz = half_ap
    a = tilt if plane == "longitudinal" else float(rng.uniform(-8, 8))
    parts = TissueModel(URINE)
    cortex = Ellipse(c[0], c[1], rx, rz, angle_deg=a, edge_mm=0.2)
    parts.add(Ellipse(c[0], c[1], rx + 0.8, rz + 0.8, angle_deg=a, edge_mm=0.2), tissue("capsule", 8.0, 0.9))
    parts.add(
        cortex,
        tissue("cortex", CORTEX_DB, CORTEX_ATT, rng, label=label, texture_db=1.5, texture_scale_mm=2.0),
    )
    ca, sa = np.cos(np.deg2rad(a)), np.sin(np.deg2rad(a))
    n_pyr = int(rng.integers(6, 10))
    pyramid = tissue("medulla", -14.0, 0.8, label=label)
    for phi in np.linspace(0, 2 * np.pi, n_pyr, endpoint=False) + rng.uniform(0, 0.5):
        u, v = 0.6 * np.cos(phi) * rx, 0.6 * np.sin(phi) * rz
        px, pz = c[0] + ca * u - sa * v, c[1] + sa * u + ca * v
        ang = float(np.rad2deg(np.arctan2(pz - c[1], px - c[0])))
        parts.add(
            Ellipse(
                float(px),
                float(pz),
                0.17 * min(rx, 2 * rz) + 1.0,
                0.09 * min(rx, 2 * rz) + 1.0,
                angle_deg=ang,
                edge_mm=0.5,
            ),
            pyramid,
        )
    sinus_t = tissue("sinus_fat", 9.0, 1.0, rng, label=label, texture_db=3.0, texture_scale_mm=1.5)
    if plane == "longitudinal":
        parts.add(
            StarShape(
                c[0],
                c[1],
                0.62 * rx,
                0.33 * rz,
                angle_deg=a,
                harmonics=((3, 0.08, float(rng.uniform(0, 6.3))),),
                edge_mm=0.8,
            ),
            sinus_t,
        )
    else:  # the sinus opens medially (the hilum), giving the C shape of a transverse kidney
        side = -1.0 if rng.random() < 0.5 else 1.0
        parts.add(
            Ellipse(c[0] + side * 0.35 * rx, c[1], 0.75 * rx, 0.32 * rz, angle_deg=a, edge_mm=0.8), sinus_t
        )
    return parts, cortex


def plan_kidney(rng: np.random.Generator, size: int) -> PatientPlan:
    sex = sample_sex(rng, 0.5)
    return _plan_kidney(rng, sex) if rng.random() < 0.75 else _plan_bladder(rng, sex)


def _plan_kidney(rng: np.random.Generator, sex: str) -> PatientPlan:
    spec = None if rng.random() < NORMAL_P else sample_lesion(rng, KIDNEY)
    wall = body_wall(rng, fat=(6.0, 18.0), muscle=(6.0, 14.0), peritoneum=False)
    wall_depth = sum(w.thickness_mm for w in wall)
    u = rng.uniform(size=10)
    length = 95.0 + 30.0 * u[0]
    axes = (length / 2.0, 25.0 + 6.0 * u[1], 18.0 + 5.0 * u[2])
    liver_th = 12.0 + 15.0 * u[3]
    kc = (0.0, wall_depth + liver_th + 6.0 + axes[2] + 4.0 * u[4])
    tilt = -12.0 + 24.0 * u[5]
    seed = int(rng.integers(0, 2**31 - 1))
    liver = tissue("liver", 0.0, 0.5, rng, texture_db=1.2, texture_scale_mm=3.0)
    fat = tissue("perirenal_fat", 3.0, 0.6, rng, texture_db=2.5, texture_scale_mm=2.0)
    psoas = tissue("psoas", -10.0, 1.0, rng, texture_db=2.5, texture_scale_mm=1.2)
    parenchyma = Parenchyma(CORTEX_DB, CORTEX_ATT)
    if spec is not None:
        if spec.kind in ("stone", "hydronephrosis"):
            off = (0.15 * (u[6] - 0.5) * axes[0], 0.0)
        elif spec.kind == "cortical_cyst":
            phi = 2 * np.pi * u[7]
            off = (0.75 * axes[1] * np.cos(phi), 0.75 * axes[2] * np.sin(phi))
        else:
            phi = 2 * np.pi * u[7]
            off = (0.45 * axes[1] * np.cos(phi), 0.4 * axes[2] * np.sin(phi))
    else:
        off = (0.0, 0.0)
    scenes = []
    for plane in image_planes(rng):
        parts, cortex = _kidney_parts(plane, kc, axes, tilt, seed, ORGAN_LABEL)
        lc = (kc[0] + off[0] * (axes[0] / axes[1] if plane == "longitudinal" else 1.0), kc[1] + off[1])
        section = build_section(spec, plane, lc[0], lc[1], parenchyma) if spec is not None else None
        kb = tight_bounds(cortex, 0.5)
        target = kb if plane == "longitudinal" or section is None else section.extent()
        if section is not None:
            target = union_bounds(target, section.extent())
        params, shift = fit_probe(rng, "curvilinear", KIDNEY_DEPTH_MM, target, 10.0, margin_mm=3.0)
        model = TissueModel(fat)
        add_body_wall(model, params, wall, rng)
        model.add(
            Band(
                [-200.0, 200.0],
                [wall_depth - 1, wall_depth - 1],
                [-200.0, 200.0],
                [wall_depth + liver_th + 8.0, wall_depth + liver_th - 4.0],
            ),
            liver,
        )
        model.add(Band.flat(kc[1] + axes[2] + 8.0, kc[1] + axes[2] + 30.0), psoas)
        for layer in parts.layers:
            model.add(moved(layer.shape, -shift, 0.0), layer.tissue)
        measurements, landmarks = {}, {}
        if plane == "longitudinal":
            measurements["kidney_length_mm"] = round(float(2.0 * cortex.rx), 2)
            a = np.deg2rad(cortex.angle_deg)
            for name, sgn in (("kidney_pole_p1", -1.0), ("kidney_pole_p2", 1.0)):
                landmarks[name] = (
                    float(cortex.cx - shift + sgn * cortex.rx * np.cos(a)),
                    float(cortex.cz + sgn * cortex.rx * np.sin(a)),
                )
        section = paint_lesion(model, section, shift)
        scenes.append(Scene(plane, params, model, section, measurements, landmarks))
    return PatientPlan("kidney", "kidney", sex, KIDNEY, spec, scenes)


def _plan_bladder(rng: np.random.Generator, sex: str) -> PatientPlan:
    spec = None if rng.random() < NORMAL_P else sample_lesion(rng, BLADDER)
    wall = body_wall(rng, fat=(5.0, 20.0), muscle=(6.0, 14.0), peritoneum=False)
    wall_depth = sum(w.thickness_mm for w in wall)
    u = rng.uniform(size=8)
    half = {"transverse": 32.0 + 12.0 * u[0], "longitudinal": 28.0 + 10.0 * u[1]}
    rz = 24.0 + 10.0 * u[2]
    bw = 2.5 + 2.0 * u[3]
    bc = (0.0, wall_depth + 3.0 + bw + rz)
    seed = int(rng.integers(0, 2**31 - 1))
    pelvis = tissue("pelvic_soft_tissue", -3.0, 0.7, rng, texture_db=2.5, texture_scale_mm=2.5)
    behind = tissue("uterus_prostate" if sex == "F" else "prostate", -1.0, 0.7, rng, texture_db=1.5)
    parenchyma = Parenchyma(0.0, 0.1)
    scenes = []
    for plane in image_planes(rng):
        prng = np.random.default_rng([seed, PLANES.index(plane)])
        harm = (
            (4, float(prng.uniform(0.03, 0.07)), float(np.pi / 4 + prng.normal(0, 0.1))),
            (2, float(prng.uniform(0.0, 0.04)), 0.0),
        )
        rx = half[plane]
        outer = StarShape(bc[0], bc[1], rx + bw, rz + bw, harmonics=harm, edge_mm=0.3)
        lumen = StarShape(bc[0], bc[1], rx, rz, harmonics=harm, edge_mm=0.3)
        section = None
        if spec is not None:
            aw, al, ah = spec.semi_axes_mm
            if spec.kind == "urothelial_carcinoma":
                x_rel = float(np.clip(u[4] - 0.5, -0.4, 0.4)) * rx
                lc = (x_rel, bc[1] + rz * np.sqrt(max(1.0 - (x_rel / rx) ** 2, 0.0)) - 0.5 * ah)
                section = build_section(spec, plane, lc[0], lc[1], parenchyma, clip=outer)
            else:  # stones and clots lie on the posterior (dependent) wall
                lc = (float(u[5] - 0.5) * 0.3 * rx, bc[1] + rz - ah - 0.3)
                section = build_section(spec, plane, lc[0], lc[1], parenchyma, clip=lumen)
        target = tight_bounds(outer, 0.5) if section is None else section.extent()
        params, shift = fit_probe(rng, "curvilinear", BLADDER_DEPTH_MM, target, 10.0, margin_mm=3.0)
        parts = TissueModel(pelvis)
        parts.add(Ellipse(bc[0], bc[1] + rz + bw + 18.0, 22.0, 16.0, edge_mm=1.0), behind)
        parts.add(outer, tissue("bladder_wall", 3.0, 0.9, label=ORGAN_LABEL))
        parts.add(lumen, with_label(URINE, ORGAN_LABEL))
        model, section = assemble(pelvis, params, wall, parts, section, shift, rng)
        scenes.append(Scene(plane, params, model, section))
    return PatientPlan("kidney", "bladder", sex, BLADDER, spec, scenes)


simulate_kidney = register("kidney")(simulator(plan_kidney))
