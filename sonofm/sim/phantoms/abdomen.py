"""Spleen and pancreas phantom (curvilinear probe).

Spleen (left intercostal, coronal-oblique): a homogeneous organ slightly brighter than liver with
the hilum (echogenic fat and splenic vessels) on its deep concave side, the diaphragm with lung
over the upper pole, the left kidney deep to the lower pole in long-axis views. Lesions: simple
cysts, haemangioma-like hyperechoic nodules, wedge-shaped hypoechoic infarcts (base on the
capsule, apex toward the hilum), lymphoma/metastatic hypoechoic nodules (malignant).
Pancreas (epigastric): the left lobe of the liver in front, the gland (head-body-tail in the
transverse view) with the splenic vein along its back, the SMA in its fat collar and the aorta
deeper, the vertebral body (bright, shadowing) behind; in the sagittal view the body in section
over the splenic vein, the SMA leaving the aorta. Lesions: ductal adenocarcinoma (hypoechoic,
ill-defined, malignant), neuroendocrine tumour (round, hypervascular, malignant), serous
cystadenoma (microcystic, septated), simple cysts and pseudocysts (fluid collections with debris).
No spleen-length measurement: the taxonomy has no such id. No spiculated margins here (nor in
`urology`): they are not how these tumours present, and spicules thinner than the pixels of a
deep curvilinear image would make the calipers disagree with the mask.
"""

from __future__ import annotations

import numpy as np

from sonofm.sim.phantoms.anatomy import (
    BLOOD,
    LUMEN_LABEL,
    ORGAN_LABEL,
    body_wall,
    tissue,
    with_label,
)
from sonofm.sim.phantoms.base import simulator
from sonofm.sim.phantoms.lesion_section import PLANES, LesionSection, Parenchyma, build_section
from sonofm.sim.phantoms.lesions import LesionSpec, lesion_catalogue, sample_lesion
from sonofm.sim.phantoms.placement import assemble, place_probe, union_bounds
from sonofm.sim.phantoms.plan import PatientPlan, Scene, image_planes, sample_sex
from sonofm.sim.phantoms.shapes import Arc, Intersection, tight_bounds
from sonofm.sim.registry import register
from sonofm.sim.tissue import Band, Ellipse, Layer, Polygon, Shape, StarShape, Tissue, TissueModel, Tube

NORMAL_P = 0.15
SPLEEN_DEPTH_MM = (100.0, 150.0)
PANCREAS_DEPTH_MM = (110.0, 160.0)
SPLEEN_DB, SPLEEN_ATT = 1.5, 0.5
PANCREAS_DB, PANCREAS_ATT = 3.0, 0.6

SPLEEN = lesion_catalogue("spleen")
PANCREAS = lesion_catalogue("pancreas")


def wedge_section(
    spec: LesionSpec,
    plane: str,
    x: float,
    z_base: float,
    parenchyma: Parenchyma,
    clip: Shape | None = None,
) -> LesionSection:
    """A wedge (infarct) with its base on the capsule at depth `z_base` and its apex deeper.

    `build_section` draws smooth contours; a splenic or renal infarct is a triangle, so it is
    drawn here as a polygon with the lesion tissues of `spec`. With `clip` (the organ), the base
    starts above the capsule and is cut by it, so the wedge follows the organ's curved surface.
    """
    rng = np.random.default_rng([spec.seed, PLANES.index(plane)])
    aw, al, ah = spec.semi_axes_mm
    half = aw if plane == "transverse" else al
    depth = 2.0 * max(ah, 0.6 * half)
    skew = float(rng.uniform(-0.25, 0.25)) * half
    top = z_base - (6.0 if clip is not None else 0.5)
    verts = np.array(
        [
            [x - half, top],
            [x + half, top],
            [x + half * 0.12 + skew, z_base + depth],
            [x - half * 0.12 + skew, z_base + depth],
        ]
    )
    edge = 0.15 if spec.margins[0] != "indistinct" else float(rng.uniform(1.0, 1.8))
    outline: Shape = Polygon(verts, edge_mm=edge)
    if clip is not None:
        outline = Intersection([outline, clip], edge_mm=edge)
    att = parenchyma.attenuation if np.isnan(spec.solid_attenuation) else spec.solid_attenuation
    solid = Tissue(
        "infarct",
        parenchyma.echo_db + spec.solid_echo_db,
        att,
        spec.label,
        texture_db=max(spec.texture_db, 1.0),
        texture_scale_mm=1.5,
        texture_seed=int(rng.integers(0, 2**31 - 1)),
    )
    base = StarShape(x + skew / 2, z_base + depth / 2, half, depth / 2, edge_mm=edge)
    return LesionSection([Layer(outline, solid)], outline, base, plane, spec.label)


# --------------------------------------------------------------------------------------------- spleen


def _top_surface(shape: StarShape, x: float, step_mm: float = 0.05) -> float:
    """Depth of the superficial surface (capsule) of `shape` at lateral position x."""
    x0, z0, x1, z1 = shape.bounds()
    zs = np.arange(z0, z1, step_mm)
    inside = shape.inside(np.full(zs.shape, x), zs)
    if not inside.any():
        raise ValueError(f"x = {x:.1f} mm does not cross the organ")
    return float(zs[np.argmax(inside)])


def _plan_spleen(rng: np.random.Generator, sex: str) -> PatientPlan:
    spec = None if rng.random() < NORMAL_P else sample_lesion(rng, SPLEEN)
    wall = body_wall(rng, fat=(4.0, 14.0))
    wd = sum(w.thickness_mm for w in wall)
    u = rng.uniform(size=12)
    half = {"longitudinal": 48.0 + 14.0 * u[0], "transverse": 28.0 + 10.0 * u[1]}
    rz = 17.0 + 6.0 * u[2]
    if spec is not None:
        aw, al, ah = spec.semi_axes_mm
        wedge = spec.kind == "infarct"
        rz = max(rz, (2.0 * max(ah, 0.6 * max(aw, al)) + 6.0) / 2 if wedge else ah * 1.15 + 4.0)
        half["transverse"] = max(half["transverse"], aw * 1.2 + 8.0)
        half["longitudinal"] = max(half["longitudinal"], al * 1.2 + 10.0)
    sc = (0.0, wd + 6.0 + 4.0 * u[3] + rz)
    tilt = -15.0 + 30.0 * u[4]
    seed = int(rng.integers(0, 2**31 - 1))
    spleen_t = tissue(
        "spleen", SPLEEN_DB, SPLEEN_ATT, rng, label=ORGAN_LABEL, texture_db=0.8, texture_scale_mm=3
    )
    hilar_fat = tissue("hilar_fat", 8.0, 0.7, rng, label=0, texture_db=2.5, texture_scale_mm=1.5)
    bowel = tissue("retroperitoneum", -8.0, 0.7, rng, texture_db=3.5, texture_scale_mm=3.0)
    cortex = tissue("kidney_cortex", -4.0, 0.8, rng, label=0, texture_db=1.5)
    sinus = tissue("kidney_sinus", 9.0, 1.0, rng, label=0, texture_db=3.0, texture_scale_mm=1.5)
    lesion_rel = (0.0, 0.0)
    if spec is not None:
        aw, al, ah = spec.semi_axes_mm
        if spec.kind != "infarct":
            lesion_rel = (float(u[5] - 0.5), float(-0.6 * u[6]))  # fractions of the free room
    par = Parenchyma(SPLEEN_DB, SPLEEN_ATT)
    scenes = []
    for plane in image_planes(rng):
        prng = np.random.default_rng([seed, PLANES.index(plane)])
        rx = half[plane]
        ang = tilt if plane == "longitudinal" else float(prng.uniform(-6, 6))
        spleen = StarShape(
            sc[0],
            sc[1],
            rx,
            rz,
            angle_deg=ang,
            harmonics=((3, float(prng.uniform(0.0, 0.04)), 0.5),),
            edge_mm=0.3,
        )
        parts = TissueModel(bowel)
        a = np.deg2rad(ang)
        if plane == "longitudinal":
            # left kidney deep to the lower pole; diaphragm and lung curving over the upper pole
            kc = (sc[0] + 0.45 * rx * np.cos(a), sc[1] + rz + 22.0 + 6.0 * float(prng.random()))
            parts.add(
                Ellipse(kc[0], kc[1], 45.0, 22.0, angle_deg=ang, edge_mm=0.3), tissue("capsule", 8.0, 0.9)
            )
            parts.add(Ellipse(kc[0], kc[1], 44.0, 21.0, angle_deg=ang, edge_mm=0.3), cortex)
            parts.add(Ellipse(kc[0], kc[1], 26.0, 7.0, angle_deg=ang, edge_mm=0.8), sinus)
            # the dome: a circle around the spleen, centred toward the lower pole, passing just
            # beyond the upper pole; lung outside it
            up = np.array([sc[0] - rx * np.cos(a), sc[1] - rx * np.sin(a)])
            dc = (
                sc[0] + 0.6 * rx * np.cos(a),
                sc[1] + 0.6 * rx * np.sin(a) + 10.0 + 10.0 * float(prng.random()),
            )
            r_d = float(np.hypot(*(up - np.array(dc)))) + 2.0 + 4.0 * float(prng.random())
            parts.add(Arc(dc[0], dc[1], r_d + 3.0, r_d + 300.0), tissue("lung", -4.0, 6.0, label=0))
            parts.add(Arc(dc[0], dc[1], r_d, r_d + 3.0, edge_mm=0.3), tissue("diaphragm", 16.0, 1.2, label=0))
        parts.add(spleen, spleen_t)
        # hilum: echogenic fat notching the deep concave side, splenic vessels in it
        hx, hz = sc[0], sc[1] + rz * 0.95
        parts.add(Ellipse(hx, hz, 0.3 * rx + 4.0, 0.28 * rz + 2.0, angle_deg=ang, edge_mm=0.6), hilar_fat)
        lumen = with_label(BLOOD, LUMEN_LABEL)
        if plane == "transverse":
            for k in range(int(prng.integers(2, 4))):
                vx = hx + (k - 1) * float(prng.uniform(5.0, 8.0))
                vr = float(prng.uniform(2.0, 3.5))
                parts.add(Ellipse(vx, hz + 1.5 + vr, vr, vr * 0.9, edge_mm=0.1), lumen)
        else:
            pts = np.array([[hx - 0.25 * rx, hz + 2.5], [hx, hz + 1.0], [hx + 0.25 * rx, hz + 3.0]])
            parts.add(Tube(pts, float(prng.uniform(2.5, 4.0)), edge_mm=0.1), lumen)
        section = None
        if spec is not None:
            aw, al, ah = spec.semi_axes_mm
            lh = aw if plane == "transverse" else al
            if spec.kind == "infarct":
                x = sc[0] + (float(u[7]) - 0.5) * max(rx - lh - 6.0, 0.0)
                z_top = _top_surface(spleen, x)
                section = wedge_section(spec, plane, x, z_top, par, clip=spleen)
            else:
                room_x = max(rx - 1.2 * lh - 4.0, 0.0)
                room_z = max(rz - 1.15 * ah - 3.0, 0.0)
                cx, cz = sc[0] + lesion_rel[0] * room_x, sc[1] + lesion_rel[1] * room_z
                # keep the lesion centre on the tilted long axis's line
                cz += (cx - sc[0]) * np.tan(a) * (plane == "longitudinal")
                section = build_section(spec, plane, float(cx), float(cz), par)
        target = tight_bounds(spleen, 0.5)
        if section is not None:
            target = union_bounds(target, section.extent())
        params, shift = place_probe(rng, "curvilinear", SPLEEN_DEPTH_MM, target, 10.0)
        model, section = assemble(bowel, params, wall, parts, section, shift, rng)
        scenes.append(Scene(plane, params, model, section))
    return PatientPlan("abdomen", "spleen", sex, SPLEEN, spec, scenes)


# --------------------------------------------------------------------------------------------- pancreas


def _plan_pancreas(rng: np.random.Generator, sex: str) -> PatientPlan:
    spec = None if rng.random() < NORMAL_P else sample_lesion(rng, PANCREAS)
    wall = body_wall(rng)
    wd = sum(w.thickness_mm for w in wall)
    u = rng.uniform(size=12)
    liver_th = 18.0 + 20.0 * u[0]
    pr = 7.0 + 3.0 * u[1]  # antero-posterior half-thickness of body/tail
    if spec is not None:
        pr = max(pr, spec.semi_axes_mm[2] * 1.1 + 1.5)
    pz = wd + liver_th + 6.0 + pr  # depth of the body's axis
    head_x = -(32.0 + 8.0 * u[2])
    tail_x = 40.0 + 10.0 * u[3]
    sv_r = 3.0 + 1.5 * u[4]
    sma_r, ao_r = 3.0 + 1.0 * u[5], 8.0 + 3.0 * u[6]
    sma_z = pz + pr + 2 * sv_r + 9.0
    ao_z = sma_z + sma_r + 10.0 + ao_r
    spine_z = ao_z + ao_r + 4.0
    seed = int(rng.integers(0, 2**31 - 1))
    liver_t = tissue("liver", 0.0, 0.5, rng, label=0, texture_db=1.2, texture_scale_mm=3.0)
    panc_t = tissue(
        "pancreas", PANCREAS_DB, PANCREAS_ATT, rng, label=ORGAN_LABEL, texture_db=2.0, texture_scale_mm=1.2
    )
    fat = tissue("retroperitoneal_fat", 9.0, 0.7, rng, texture_db=3.0, texture_scale_mm=2.0)
    bowel = tissue("bowel", -5.0, 0.8, rng, texture_db=4.0, texture_scale_mm=3.0)
    wall_t = tissue("vessel_wall", 8.0, 0.8)
    lumen = with_label(BLOOD, LUMEN_LABEL)
    along = float(u[7])  # where along head-body-tail the lesion sits
    par = Parenchyma(PANCREAS_DB, PANCREAS_ATT)
    scenes = []
    for plane in image_planes(rng):
        prng = np.random.default_rng([seed, PLANES.index(plane)])
        parts = TissueModel(bowel)
        parts.add(Band.flat(wd - 0.5, spine_z + 30.0), fat)
        slope = float(prng.uniform(0.1, 0.25))
        parts.add(
            Band(
                [-200.0, 200.0],
                [wd - 1.0, wd - 1.0],
                [-60.0, 60.0],
                [wd + liver_th + 60 * slope, wd + liver_th - 60 * slope],
            ),
            liver_t,
        )
        if plane == "transverse":
            axis = np.array(
                [[head_x, pz + 3.0], [0.3 * head_x, pz], [0.5 * tail_x, pz - 2.0], [tail_x, pz - 6.0]]
            )
            pancreas = Tube(axis, pr, edge_mm=0.4)
            head = Ellipse(head_x, pz + 2.0, pr * 1.6 + 3.0, pr * 1.35, edge_mm=0.4)
            parts.add(head, panc_t)
            parts.add(pancreas, panc_t)
            sv = axis[1:] + np.array([0.0, pr + sv_r + 0.8])
            parts.add(Tube(sv, sv_r + 0.6, edge_mm=0.1), wall_t)
            parts.add(Tube(sv, sv_r, edge_mm=0.1), lumen)
            parts.add(
                Ellipse(0.0, sma_z, sma_r + 3.5, sma_r + 3.0, edge_mm=0.5), tissue("sma_fat", 10.0, 0.7)
            )
            parts.add(Ellipse(0.0, sma_z, sma_r, sma_r, edge_mm=0.1), lumen)
            parts.add(Ellipse(3.0, ao_z, ao_r + 1.0, ao_r + 1.0, edge_mm=0.1), wall_t)
            parts.add(Ellipse(3.0, ao_z, ao_r, ao_r, edge_mm=0.1), lumen)
            parts.add(Ellipse(-22.0, ao_z - 2.0, 10.0, 6.0, edge_mm=0.1), lumen)  # IVC
            organ = (0.6 * head_x, pz - pr - 2.0, 0.6 * tail_x, pz + pr + 2.0)
            lx = head_x + along * (tail_x - head_x) * 0.85
            lz = float(np.interp(lx, axis[:, 0], axis[:, 1]))
        else:  # sagittal through the body: gland in section over the splenic vein, SMA off the aorta
            body = Ellipse(0.0, pz, pr * 1.3 + 2.0, pr, angle_deg=float(prng.uniform(-8, 8)), edge_mm=0.4)
            parts.add(body, panc_t)
            parts.add(Ellipse(0.0, pz + pr + sv_r + 0.8, sv_r + 0.6, sv_r + 0.6, edge_mm=0.1), wall_t)
            parts.add(Ellipse(0.0, pz + pr + sv_r + 0.8, sv_r, sv_r, edge_mm=0.1), lumen)
            ao = np.array([[-60.0, ao_z], [60.0, ao_z + 4.0]])
            parts.add(Tube(ao, ao_r + 1.0, edge_mm=0.1), wall_t)
            parts.add(Tube(ao, ao_r, edge_mm=0.1), lumen)
            sma = np.array([[-12.0, ao_z - ao_r + 1.0], [-4.0, sma_z], [40.0, sma_z + 10.0]])
            parts.add(Tube(sma, sma_r + 2.5, edge_mm=0.5), tissue("sma_fat", 10.0, 0.7))
            parts.add(Tube(sma, sma_r, edge_mm=0.1), lumen)
            organ = tight_bounds(body, 0.5)
            lx, lz = 0.0, pz
        parts.add(Arc(0.0, spine_z + 40.0, 0.0, 40.0), tissue("vertebra", 14.0, 12.0, label=0))
        section = build_section(spec, plane, float(lx), float(lz), par) if spec is not None else None
        target = (
            organ if section is None else union_bounds(section.extent(), (lx - 15, lz - 10, lx + 15, lz + 10))
        )
        params, shift = place_probe(rng, "curvilinear", PANCREAS_DEPTH_MM, target, 8.0)
        model, section = assemble(bowel, params, wall, parts, section, shift, rng)
        scenes.append(Scene(plane, params, model, section))
    return PatientPlan("abdomen", "pancreas", sex, PANCREAS, spec, scenes)


def plan_abdomen(rng: np.random.Generator, size: int) -> PatientPlan:
    sex = sample_sex(rng, 0.5)
    return _plan_spleen(rng, sex) if rng.random() < 0.5 else _plan_pancreas(rng, sex)


simulate_abdomen = register("abdomen")(simulator(plan_abdomen))
