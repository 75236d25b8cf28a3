"""Superficial structures (linear probe): lymph nodes and the soft tissues under the skin.

Lymph node (neck or axilla): skin, subcutaneous fat, a muscle layer, the node in the deep fat,
often a vein or artery deep to it. A normal node (the organ, label 2) is oval (long axis over
twice the short axis) with a hypoechoic cortex around an echogenic fatty hilum. An abnormal node
is the lesion (label 1): reactive nodes stay oval with their hilum and central (hilar) flow,
reported as internal vascularity; metastatic and lymphomatous nodes are round, hypoechoic, with
no hilum, peripheral or mixed flow and sometimes necrosis (cystic spaces) or microcalcifications;
suppurative nodes are fluid collections with debris.
Soft tissue: skin, subcutaneous fat with bright connective septa, the fascia, striated muscle and
the bone surface (bright, shadowing) deepest. Lesions: lipoma (oval, iso- or hyperechoic,
parallel to the skin, with thin echogenic striations), abscess (fluid collection with debris),
ganglion cyst (anechoic, in the deep fat under the muscle) and sarcoma (malignant, in muscle).
The organ label covers the subcutaneous fat, the muscle and the deep fat (not skin, fascia, bone).
"""

from __future__ import annotations

import numpy as np

from sonofm.sim.phantoms.anatomy import BLOOD, LUMEN_LABEL, ORGAN_LABEL, tissue, with_label
from sonofm.sim.phantoms.base import simulator
from sonofm.sim.phantoms.lesion_section import PLANES, LesionSection, Parenchyma, build_section
from sonofm.sim.phantoms.lesions import lesion_catalogue, sample_lesion
from sonofm.sim.phantoms.placement import assemble, place_probe
from sonofm.sim.phantoms.plan import PatientPlan, Scene, image_planes, sample_sex
from sonofm.sim.phantoms.shapes import Intersection, Union, tight_bounds
from sonofm.sim.registry import register
from sonofm.sim.tissue import Band, Ellipse, Layer, StarShape, Tissue, TissueModel, Tube

NORMAL_P = 0.15
DEPTH_MM = (30.0, 50.0)
FAT_DB, FAT_ATT = 0.0, 0.6  # reference tissue: the deep fat around a node
SUBCUT_DB = -6.0
MUSCLE_DB, MUSCLE_ATT = -5.0, 1.0

LYMPH_NODE = lesion_catalogue("lymph_node")

SOFT_TISSUE = lesion_catalogue("soft_tissue")


def _layers_model(
    rng: np.random.Generator,
    seed: int,
    plane: str,
    skin: float,
    fat: float,
    muscle: float,
    organ_label: int | None,
) -> tuple[TissueModel, float, float]:
    """Skin, subcutaneous fat with septa, fascia, muscle with striations; returns (parts, fat top,
    fascia depth). Patient frame, flat (linear probe); later layers add the deep structures."""
    prng = np.random.default_rng([seed, PLANES.index(plane)])
    deep_fat = tissue(
        "deep_fat", FAT_DB, FAT_ATT, rng, label=organ_label, texture_db=2.0, texture_scale_mm=1.5
    )
    parts = TissueModel(deep_fat)
    parts.add(
        Band.flat(-5.0, skin), tissue("skin", 8.0, 0.9, rng, label=0, texture_db=1.5, texture_scale_mm=0.8)
    )
    subcut = tissue(
        "subcutaneous_fat", SUBCUT_DB, 0.6, rng, label=organ_label, texture_db=2.0, texture_scale_mm=2.5
    )
    parts.add(Band.flat(skin, skin + fat), subcut)
    septum = tissue("fat_septum", 4.0, 0.7)
    for _ in range(int(prng.integers(2, 6))):
        z = skin + float(prng.uniform(0.2, 0.8)) * fat
        x0 = float(prng.uniform(-30, 20))
        pts = np.array(
            [[x0, z], [x0 + float(prng.uniform(8, 25)), z + float(prng.uniform(-0.25, 0.25)) * fat]]
        )
        parts.add(
            Intersection([Tube(pts, 0.25, edge_mm=0.1), Band.flat(skin + 0.5, skin + fat - 0.5)]), septum
        )
    fascia = skin + fat
    parts.add(Band.flat(fascia, fascia + 1.0), tissue("fascia", 8.0, 0.8, label=0))
    mus = tissue(
        "muscle", MUSCLE_DB, MUSCLE_ATT, rng, label=organ_label, texture_db=2.0, texture_scale_mm=1.0
    )
    parts.add(Band.flat(fascia + 1.0, fascia + 1.0 + muscle), mus)
    fib = tissue("perimysium", 2.0, MUSCLE_ATT)
    n = int(prng.integers(3, 7))
    tilt = float(prng.uniform(-0.15, 0.15))
    for k in range(n):  # fibrillar pattern: thin bright lines along the fibres
        z = fascia + 1.0 + (k + 0.5 + float(prng.uniform(-0.3, 0.3))) * muscle / n
        pts = np.array([[-80.0, z - 80 * tilt], [80.0, z + 80 * tilt]])
        parts.add(
            Intersection([Tube(pts, 0.2, edge_mm=0.1), Band.flat(fascia + 1.5, fascia + muscle + 0.5)]), fib
        )
    parts.add(
        Band.flat(fascia + 1.0 + muscle, fascia + 2.0 + muscle), tissue("deep_fascia", 8.0, 0.8, label=0)
    )
    return parts, skin, fascia


# --------------------------------------------------------------------------------------------- lymph node


def _hilum(section: LesionSection, rng: np.random.Generator, label: int, echo_db: float) -> Layer:
    """The echogenic fatty hilum of a node: an eccentric ellipse opening toward one side."""
    b = section.base
    side = 1.0 if rng.random() < 0.5 else -1.0
    a = np.deg2rad(b.angle_deg)
    off = side * 0.35 * b.rx
    hilum = Ellipse(
        b.cx + off * np.cos(a),
        b.cz + off * np.sin(a),
        0.55 * b.rx,
        0.38 * b.rz,
        angle_deg=b.angle_deg,
        edge_mm=0.5,
    )
    return Layer(Intersection([hilum, section.outline]), Tissue("fatty_hilum", echo_db, FAT_ATT, label))


def _plan_node(rng: np.random.Generator, sex: str) -> PatientPlan:
    spec = None if rng.random() < NORMAL_P else sample_lesion(rng, LYMPH_NODE)
    u = rng.uniform(size=12)
    skin, fat, muscle = 1.5 + 1.0 * u[0], 3.0 + 6.0 * u[1], 4.0 + 6.0 * u[2]
    if spec is not None:
        aw, al, ah = spec.semi_axes_mm
        half_len, half_w, half_h = al, aw, ah
    else:  # a normal node: long axis over twice the short axis
        half_len = 5.0 + 6.0 * u[3]
        half_h = half_len / (2.2 + 0.8 * u[4])
        half_w = half_h * (1.2 + 0.4 * u[5])
    deep = skin + fat + 2.0 + muscle
    nz = deep + 2.0 + half_h + 3.0 * u[6]
    has_vessel = u[7] < 0.6
    vr = 3.0 + 3.0 * u[8]
    vz = nz + half_h + 3.0 + vr
    seed = int(rng.integers(0, 2**31 - 1))
    par = Parenchyma(FAT_DB, FAT_ATT)
    scenes = []
    for plane in image_planes(rng):
        prng = np.random.default_rng([seed, PLANES.index(plane)])
        parts, _, _ = _layers_model(rng, seed, plane, skin, fat, muscle, None)
        lumen = with_label(BLOOD, LUMEN_LABEL)
        if has_vessel:
            if plane == "transverse":
                vx = float(prng.uniform(-8.0, 8.0))
                parts.add(
                    Ellipse(vx, vz, vr + 0.6, vr * 0.9 + 0.6, edge_mm=0.1), tissue("vessel_wall", 8.0, 0.8)
                )
                parts.add(Ellipse(vx, vz, vr, vr * 0.9, edge_mm=0.1), lumen)
            else:
                pts = np.array([[-60.0, vz], [60.0, vz + float(prng.uniform(-3, 3))]])
                parts.add(Tube(pts, vr + 0.6, edge_mm=0.1), tissue("vessel_wall", 8.0, 0.8))
                parts.add(Tube(pts, vr, edge_mm=0.1), lumen)
        section = None
        if spec is not None:
            section = build_section(spec, plane, 0.0, nz, par)
            if spec.kind == "reactive_node":
                section.layers.insert(1, _hilum(section, prng, spec.label, FAT_DB + 6.0))
            target = section.extent()
        else:
            rx = half_w if plane == "transverse" else half_len
            ang = float(prng.uniform(-10, 10))
            node = StarShape(0.0, nz, rx, half_h, angle_deg=ang, harmonics=((2, 0.03, 0.0),), edge_mm=0.3)
            parts.add(node, tissue("node_cortex", FAT_DB - 9.0, 0.6, rng, label=ORGAN_LABEL, texture_db=1.0))
            hil = Ellipse(
                0.3 * rx * np.cos(np.deg2rad(ang)),
                nz + 0.3 * rx * np.sin(np.deg2rad(ang)),
                0.6 * rx,
                0.4 * half_h,
                angle_deg=ang,
                edge_mm=0.4,
            )
            parts.add(
                Intersection([hil, node]), tissue("fatty_hilum", FAT_DB + 6.0, FAT_ATT, label=ORGAN_LABEL)
            )
            target = tight_bounds(node, 0.5)
        params, shift = place_probe(rng, "linear", DEPTH_MM, target, 5.0, margin_mm=1.5)
        model, section = assemble(parts.background, params, None, parts, section, shift, rng)
        scenes.append(Scene(plane, params, model, section))
    return PatientPlan("superficial", "lymph_node", sex, LYMPH_NODE, spec, scenes)


# --------------------------------------------------------------------------------------------- soft tissue


def _striations(section: LesionSection, rng: np.random.Generator, label: int, echo_db: float) -> Layer:
    """Thin echogenic lines parallel to the skin inside a lipoma."""
    b = section.base
    n = int(rng.integers(3, 7))
    zs = b.cz + rng.uniform(-0.7, 0.7, n) * b.rz
    segs = []
    for z in zs:
        x0 = b.cx + float(rng.uniform(-0.8, 0.2)) * b.rx
        ln = float(rng.uniform(0.4, 0.9)) * b.rx
        segs.append(
            Tube(np.array([[x0, z], [x0 + ln, z + float(rng.uniform(-0.08, 0.08)) * ln]]), 0.3, edge_mm=0.1)
        )
    return Layer(Intersection([Union(segs), section.outline]), Tissue("striation", echo_db, 0.7, label))


def _plan_soft_tissue(rng: np.random.Generator, sex: str) -> PatientPlan:
    spec = None if rng.random() < NORMAL_P else sample_lesion(rng, SOFT_TISSUE)
    u = rng.uniform(size=12)
    skin, fat, muscle = 1.5 + 1.5 * u[0], 5.0 + 10.0 * u[1], 8.0 + 12.0 * u[2]
    host = "fat"
    if spec is not None:
        ah = spec.semi_axes_mm[2]
        host = {"sarcoma": "muscle", "ganglion_cyst": "deep"}.get(spec.kind, "fat")
        if host == "fat":
            fat = max(fat, 2.0 * ah * 1.1 + 3.0)
        elif host == "muscle":
            muscle = max(muscle, 2.0 * ah * 1.1 + 4.0)
    fascia = skin + fat
    ah = spec.semi_axes_mm[2] if spec is not None else 0.0
    # a ganglion lies in the deep fat under the fascia, clear of the bone so that its enhancement shows
    bone_z = fascia + 2.0 + muscle + (2.0 * ah + 12.0 if host == "deep" else 3.0 + 6.0 * u[3])
    seed = int(rng.integers(0, 2**31 - 1))
    if host == "fat":
        lz = skin + fat / 2 + (u[4] - 0.5) * max(fat - 2.2 * ah - 2.0, 0.0)
        par = Parenchyma(SUBCUT_DB, 0.6)
    elif host == "muscle":
        lz, par = fascia + 1.0 + muscle / 2, Parenchyma(MUSCLE_DB, MUSCLE_ATT)
    else:
        lz, par = fascia + 2.0 + muscle + ah + 1.5, Parenchyma(FAT_DB, FAT_ATT)
    scenes = []
    for plane in image_planes(rng):
        prng = np.random.default_rng([seed, PLANES.index(plane)])
        parts, _, _ = _layers_model(rng, seed, plane, skin, fat, muscle, ORGAN_LABEL)
        # bone surface: a bright cortex that stops the beam
        parts.add(Band.flat(bone_z, bone_z + 60.0), tissue("bone", 16.0, 20.0, label=0))
        section = None
        if spec is not None:
            section = build_section(spec, plane, 0.0, float(lz), par)
            if spec.kind == "lipoma":
                section.layers.append(
                    _striations(section, prng, spec.label, par.echo_db + spec.solid_echo_db + 9.0)
                )
            target = section.extent()
        else:
            target = (-10.0, skin, 10.0, fascia + muscle)
        params, shift = place_probe(rng, "linear", DEPTH_MM, target, 5.0, margin_mm=1.5)
        model, section = assemble(parts.background, params, None, parts, section, shift, rng)
        scenes.append(Scene(plane, params, model, section))
    return PatientPlan("superficial", "soft_tissue", sex, SOFT_TISSUE, spec, scenes)


def plan_superficial(rng: np.random.Generator, size: int) -> PatientPlan:
    sex = sample_sex(rng, 0.5)
    return _plan_node(rng, sex) if rng.random() < 0.5 else _plan_soft_tissue(rng, sex)


simulate_superficial = register("superficial")(simulator(plan_superficial))
