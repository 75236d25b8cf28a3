"""Prostate and testis phantom.

Prostate (transabdominal, curvilinear probe through a full bladder): the anechoic bladder under
the abdominal wall (posterior enhancement comes from its low attenuation), the gland below its
base with the brighter homogeneous peripheral zone posteriorly and the heterogeneous transition
zone centrally, the rectum (bright gas, shadowing) behind. In the sagittal view the bladder lies
cranial (image left) of the gland. Lesions: peripheral-zone carcinoma (hypoechoic, ill-defined,
malignant), benign prostatic hyperplasia nodules in the transition zone, calcifications (bright,
shadowing) and midline/utricular cysts.
Testis (linear probe): scrotal skin, the testis with homogeneous medium-level echoes inside the
bright tunica albuginea, the mediastinum testis as a bright line (long axis) or focus (short
axis) posteriorly, the epididymal head at the upper pole. Lesions: seminoma and non-seminomatous
germ-cell tumours (malignant; microcalcifications inside a tumour stand for the microlithiasis
that accompanies them), intratesticular cysts, and hydrocele, an anechoic collection around the
testis. Diffuse microlithiasis on its own is not simulated: the taxonomy has no diagnosis for a
diffuse pattern, and an unreported finding would make the report wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sonofm.sim.phantoms.anatomy import ORGAN_LABEL, URINE, LayerSpec, body_wall, tissue
from sonofm.sim.phantoms.base import simulator
from sonofm.sim.phantoms.lesion_section import PLANES, LesionSection, Parenchyma, build_section
from sonofm.sim.phantoms.lesions import (
    DEBRIS_DB,
    FLUID_DB,
    LesionSpec,
    lesion_catalogue,
    sample_lesion,
)
from sonofm.sim.phantoms.placement import assemble, place_probe, union_bounds
from sonofm.sim.phantoms.plan import PatientPlan, Scene, image_planes
from sonofm.sim.phantoms.shapes import Arc, Dots, Intersection, moved, tight_bounds
from sonofm.sim.registry import register
from sonofm.sim.tissue import Ellipse, Layer, Shape, StarShape, Tissue, TissueModel, Tube

NORMAL_P = 0.15
PROSTATE_DEPTH_MM = (90.0, 140.0)
TESTIS_DEPTH_MM = (30.0, 45.0)
PZ_DB, PROSTATE_ATT = 0.0, 0.7
TESTIS_DB, TESTIS_ATT = 0.0, 0.6

PROSTATE = lesion_catalogue("prostate")

TESTIS = lesion_catalogue("testis")


@dataclass
class Outside(Shape):
    """Points outside `shape` (negated signed distance): a fluid rim around an organ."""

    shape: Shape
    edge_mm: float = 0.0

    def signed_distance(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        return -self.shape.signed_distance(x, z)

    def bounds(self) -> tuple[float, float, float, float]:
        return (-np.inf, -np.inf, np.inf, np.inf)


# --------------------------------------------------------------------------------------------- prostate


def _plan_prostate(rng: np.random.Generator) -> PatientPlan:
    spec = None if rng.random() < NORMAL_P else sample_lesion(rng, PROSTATE)
    wall = body_wall(rng, fat=(5.0, 20.0))
    wd = sum(w.thickness_mm for w in wall)
    u = rng.uniform(size=12)
    bl = {"transverse": 35.0 + 12.0 * u[0], "longitudinal": 30.0 + 10.0 * u[1]}
    bl_rz = 22.0 + 10.0 * u[2]
    bw = 2.5 + 2.0 * u[3]
    bc = (0.0, wd + 3.0 + bw + bl_rz)
    half = {"transverse": 20.0 + 6.0 * u[4], "longitudinal": 17.0 + 6.0 * u[5]}  # BPH grows it
    pr_z = 14.0 + 5.0 * u[6]
    if spec is not None:
        aw, al, ah = spec.semi_axes_mm
        pr_z = max(pr_z, ah * 1.2 + 4.0)
        half["transverse"] = max(half["transverse"], aw * 1.3 + 5.0)
        half["longitudinal"] = max(half["longitudinal"], al * 1.3 + 5.0)
    pc = (0.0, bc[1] + bl_rz + bw + pr_z - 3.0)
    seed = int(rng.integers(0, 2**31 - 1))
    pelvis = tissue("pelvic_soft_tissue", -5.0, 0.7, rng, texture_db=3.0, texture_scale_mm=2.5)
    pz_t = tissue("peripheral_zone", PZ_DB, PROSTATE_ATT, rng, label=ORGAN_LABEL, texture_db=1.0)
    tz_t = tissue(
        "transition_zone", -4.0, PROSTATE_ATT, rng, label=ORGAN_LABEL, texture_db=2.5, texture_scale_mm=2
    )
    par_pz, par_tz = Parenchyma(PZ_DB, PROSTATE_ATT), Parenchyma(-4.0, PROSTATE_ATT)
    scenes = []
    for plane in image_planes(rng):
        prng = np.random.default_rng([seed, PLANES.index(plane)])
        rx = half[plane]
        bx = 0.0 if plane == "transverse" else -0.35 * bl[plane]  # bladder cranial in the sagittal view
        parts = TissueModel(pelvis)
        harm = ((4, float(prng.uniform(0.02, 0.05)), float(np.pi / 4)),)
        parts.add(
            StarShape(bx, bc[1], bl[plane] + bw, bl_rz + bw, harmonics=harm, edge_mm=0.3),
            tissue("bladder_wall", 3.0, 0.9),
        )
        parts.add(StarShape(bx, bc[1], bl[plane], bl_rz, harmonics=harm, edge_mm=0.3), URINE)
        ang = 0.0 if plane == "transverse" else float(prng.uniform(-20.0, -5.0))
        gland = StarShape(pc[0], pc[1], rx, pr_z, angle_deg=ang, harmonics=((2, 0.04, 0.0),), edge_mm=0.4)
        parts.add(
            Ellipse(pc[0], pc[1], rx + 0.8, pr_z + 0.8, angle_deg=ang, edge_mm=0.3),
            tissue("capsule", 6.0, 0.8),
        )
        parts.add(gland, pz_t)
        tz = Ellipse(pc[0], pc[1] - 0.2 * pr_z, 0.62 * rx, 0.58 * pr_z, angle_deg=ang, edge_mm=0.8)
        parts.add(tz, tz_t)
        # rectum behind the gland: mucosa and gas (a bright reflector that shadows)
        rz0 = pc[1] + pr_z + 6.0 + 3.0 * float(prng.random())
        parts.add(Ellipse(pc[0], rz0 + 6.0, 22.0, 8.0, edge_mm=0.4), tissue("rectal_wall", -6.0, 0.8))
        parts.add(Arc(pc[0], rz0 + 40.0, 30.0, 34.0, edge_mm=0.2), tissue("rectal_gas", 18.0, 15.0, label=0))
        section = None
        if spec is not None:
            aw, al, ah = spec.semi_axes_mm
            lh = aw if plane == "transverse" else al
            if spec.kind == "adenocarcinoma":  # peripheral zone, posterior and lateral
                lx = pc[0] + (u[7] - 0.5) * max(rx - 1.2 * lh - 3.0, 0.0) * 1.6
                lz = pc[1] + max(pr_z - 1.15 * ah - 2.0, 0.0) * (0.5 + 0.5 * u[8])
                par = par_pz
            elif spec.kind == "prostatic_cyst":  # midline
                lx, lz = pc[0], pc[1] - 0.1 * pr_z
                par = par_tz
            else:
                lx = pc[0] + (u[7] - 0.5) * max(0.62 * rx - lh, 0.0)
                lz = pc[1] - 0.2 * pr_z + (u[8] - 0.5) * max(0.58 * pr_z - ah, 0.0)
                par = par_tz
            section = build_section(spec, plane, float(lx), float(lz), par)
        target = tight_bounds(gland, 0.5)
        if section is not None:
            target = union_bounds(target, section.extent())
        params, shift = place_probe(rng, "curvilinear", PROSTATE_DEPTH_MM, target, 8.0)
        model, section = assemble(pelvis, params, wall, parts, section, shift, rng)
        scenes.append(Scene(plane, params, model, section))
    return PatientPlan("urology", "prostate", "M", PROSTATE, spec, scenes)


# --------------------------------------------------------------------------------------------- testis


def hydrocele_section(
    spec: LesionSpec, plane: str, testis_outer: StarShape, rng_seed: int, fluid_att: float
) -> LesionSection:
    """Anechoic fluid between the tunica vaginalis (an ellipse around the testis, deeper on the
    dependent side) and the testis; septations and debris when the spec has them."""
    rng = np.random.default_rng([rng_seed, PLANES.index(plane)])
    rim = max(spec.semi_axes_mm)  # half the sampled 'size' = the rim thickness scale
    t = testis_outer
    outer = Ellipse(
        t.cx + float(rng.uniform(-0.3, 0.3)) * rim,
        t.cz + 0.25 * rim,
        t.rx + rim,
        t.rz + 0.75 * rim,
        angle_deg=t.angle_deg,
        edge_mm=0.2,
    )
    crescent = Intersection([outer, Outside(t)])
    lab = spec.label
    layers = [Layer(crescent, Tissue("hydrocele_fluid", FLUID_DB, fluid_att, lab))]
    if "debris" in spec.features:
        n = int(rng.integers(6, 14))
        phi = rng.uniform(0, 2 * np.pi, n)
        pts = np.stack(
            [outer.cx + 0.93 * outer.rx * np.cos(phi), outer.cz + 0.93 * outer.rz * np.sin(phi)], 1
        )
        layers.append(
            Layer(
                Intersection([Dots(pts, 0.6), crescent]), Tissue("debris", DEBRIS_DB, fluid_att + 0.05, lab)
            )
        )
    if "septations" in spec.features:
        for _ in range(int(rng.integers(1, 3))):
            phi = float(rng.uniform(0, 2 * np.pi))
            d = np.array([np.cos(phi), np.sin(phi)])
            p0 = np.array([t.cx, t.cz]) + d * np.array([t.rx, t.rz]) * 0.95
            p1 = np.array([outer.cx, outer.cz]) + d * np.array([outer.rx, outer.rz]) * 1.02
            layers.append(
                Layer(
                    Intersection([Tube(np.stack([p0, p1]), 0.3), crescent]), Tissue("septum", 8.0, 0.8, lab)
                )
            )
    base = StarShape(outer.cx, outer.cz, outer.rx, outer.rz, angle_deg=outer.angle_deg, edge_mm=0.2)
    return LesionSection(layers, crescent, base, plane, lab)


def _plan_testis(rng: np.random.Generator) -> PatientPlan:
    spec = None if rng.random() < NORMAL_P else sample_lesion(rng, TESTIS)
    u = rng.uniform(size=12)
    skin = 2.0 + 2.0 * u[0]
    half = {"longitudinal": 19.0 + 5.0 * u[1], "transverse": 12.0 + 3.0 * u[2]}
    rz = 10.0 + 3.0 * u[3]
    hydro = spec is not None and spec.kind == "hydrocele"
    if spec is not None and not hydro:
        aw, al, ah = spec.semi_axes_mm
        rz = max(rz, ah * 1.15 + 2.5)
        half["transverse"] = max(half["transverse"], aw * 1.2 + 3.0)
        half["longitudinal"] = max(half["longitudinal"], al * 1.2 + 4.0)
    top = skin + 1.0 + (max(spec.semi_axes_mm) * 0.6 if hydro else 0.0)  # room for the fluid rim
    tc = (0.0, top + 1.0 + rz)
    seed = int(rng.integers(0, 2**31 - 1))
    wall = [
        LayerSpec(skin, tissue("scrotal_skin", 6.0, 0.9, rng, texture_db=2.0, texture_scale_mm=1.0)),
        LayerSpec(0.8, tissue("dartos", -2.0, 0.8)),
    ]
    soft = tissue("scrotal_soft_tissue", -6.0, 0.7, rng, texture_db=3.0, texture_scale_mm=1.5)
    testis_t = tissue(
        "testis", TESTIS_DB, TESTIS_ATT, rng, label=ORGAN_LABEL, texture_db=0.8, texture_scale_mm=2.5
    )
    epi = tissue("epididymis", 2.0, 0.8, rng, label=0, texture_db=2.5, texture_scale_mm=1.2)
    par = Parenchyma(TESTIS_DB, TESTIS_ATT)
    lesion_rel = (float(u[4] - 0.5), float(u[5] - 0.5))
    scenes = []
    for plane in image_planes(rng):
        prng = np.random.default_rng([seed, PLANES.index(plane)])
        rx = half[plane]
        ang = float(prng.uniform(-8, 8))
        testis = StarShape(tc[0], tc[1], rx, rz, angle_deg=ang, harmonics=((2, 0.02, 0.0),), edge_mm=0.3)
        tunica = StarShape(
            tc[0], tc[1], rx + 0.7, rz + 0.7, angle_deg=ang, harmonics=testis.harmonics, edge_mm=0.2
        )
        parts = TissueModel(soft)
        if plane == "longitudinal":  # epididymal head capping the upper pole (image left)
            parts.add(Ellipse(tc[0] - rx - 2.0, tc[1] - 0.35 * rz, 7.0, 5.5, edge_mm=0.4), epi)
        else:
            side = 1.0 if prng.random() < 0.5 else -1.0
            parts.add(Ellipse(tc[0] + side * 0.8 * rx, tc[1] + 0.9 * rz, 5.0, 3.5, edge_mm=0.4), epi)
        parts.add(tunica, tissue("tunica_albuginea", 9.0, 0.8, label=ORGAN_LABEL))
        parts.add(testis, testis_t)
        mediastinum = tissue("mediastinum_testis", 9.0, 0.8, label=ORGAN_LABEL)
        a = np.deg2rad(ang)
        if plane == "longitudinal":
            zl = tc[1] + 0.55 * rz
            pts = np.array([[tc[0] - 0.35 * rx, zl], [tc[0] + 0.3 * rx, zl + 0.3]])
            pts[:, 1] += (pts[:, 0] - tc[0]) * np.tan(a)
            parts.add(Tube(pts, 0.6 + 0.3 * float(prng.random()), edge_mm=0.3), mediastinum)
        else:
            parts.add(Ellipse(tc[0] + 0.3 * rx, tc[1] + 0.65 * rz, 2.2, 1.4, edge_mm=0.4), mediastinum)
        section = None
        if hydro:
            section = hydrocele_section(spec, plane, tunica, spec.seed, spec.fluid_attenuation)
        elif spec is not None:
            aw, al, ah = spec.semi_axes_mm
            lh = aw if plane == "transverse" else al
            lx = tc[0] + lesion_rel[0] * max(rx - 1.15 * lh - 2.0, 0.0) * 2.0
            lz = tc[1] + lesion_rel[1] * max(rz - 1.15 * ah - 1.5, 0.0) * 2.0
            section = build_section(spec, plane, float(lx), float(lz), par)
        target = tight_bounds(tunica, 0.5)
        if section is not None:
            target = union_bounds(target, section.extent())
        params, shift = place_probe(rng, "linear", TESTIS_DEPTH_MM, target, 4.0, margin_mm=1.5)
        if hydro:  # the fluid rim is built around the moved testis (its clip cannot be translated)
            model, _ = assemble(soft, params, wall, parts, None, shift, rng)
            section = hydrocele_section(
                spec, plane, moved(tunica, -shift, 0.0), spec.seed, spec.fluid_attenuation
            )
            model.layers.extend(section.layers)
        else:
            model, section = assemble(soft, params, wall, parts, section, shift, rng)
        scenes.append(Scene(plane, params, model, section))
    return PatientPlan("urology", "testis", "M", TESTIS, spec, scenes)


def plan_urology(rng: np.random.Generator, size: int) -> PatientPlan:
    return _plan_prostate(rng) if rng.random() < 0.5 else _plan_testis(rng)


simulate_urology = register("urology")(simulator(plan_urology))
