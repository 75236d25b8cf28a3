"""Liver and gallbladder phantom (curvilinear probe, subcostal/intercostal views).

Liver: body wall, parenchyma with portal veins (bright walls) and hepatic veins (no walls)
converging toward the IVC, the diaphragm as a bright curved reflector with lung behind it; focal
lesions (cysts, haemangioma, abscess, hepatocellular carcinoma, metastasis). Gallbladder: an
anechoic pear-shaped sac with a thin wall in the liver; stones (shadowing), polyps, carcinoma.
"""

from __future__ import annotations

import numpy as np

from sonofm.sim.phantoms.anatomy import (
    BILE,
    BLOOD,
    ORGAN_LABEL,
    add_body_wall,
    add_vessel_longitudinal,
    body_wall,
    branching_vessels,
    tissue,
    with_label,
)
from sonofm.sim.phantoms.base import simulator
from sonofm.sim.phantoms.lesion_section import PLANES, Parenchyma, build_section
from sonofm.sim.phantoms.lesions import lesion_catalogue, sample_lesion
from sonofm.sim.phantoms.placement import fit_probe, paint_lesion
from sonofm.sim.phantoms.plan import PatientPlan, Scene, image_planes, sample_sex
from sonofm.sim.phantoms.shapes import Arc, moved
from sonofm.sim.registry import register
from sonofm.sim.tissue import StarShape, TissueModel

NORMAL_P = 0.15
DEPTH_MM = (120.0, 170.0)
GB_DEPTH_MM = (70.0, 120.0)  # sonographers zoom in on the gallbladder
LIVER_ATT = 0.5

LIVER = lesion_catalogue("liver")

GALLBLADDER = lesion_catalogue("gallbladder")


def _liver_background(
    model: TissueModel,
    rng: np.random.Generator,
    shift: float,
    diaphragm: tuple[float, float, float],
    vessel_seed: tuple[int, int],
    wall_depth: float,
) -> None:
    """Diaphragm + lung, portal and hepatic veins, in the patient frame moved by -shift."""
    xd, zd, rd = diaphragm
    parts = TissueModel(BLOOD)
    parts.add(Arc(xd, zd - rd, rd + 3.0, rd + 400.0), tissue("lung", -4.0, 6.0, label=0))
    parts.add(Arc(xd, zd - rd, rd, rd + 3.0, edge_mm=0.3), tissue("diaphragm", 16.0, 1.2, label=0))
    vrng = np.random.default_rng(vessel_seed)
    ivc = (xd + float(vrng.uniform(-15, 15)), zd - 8.0)
    for pts in branching_vessels(vrng, ivc, int(vrng.integers(2, 4)), (50.0, 90.0), (-2.4, -0.7), 0.15):
        add_vessel_longitudinal(parts, pts, float(vrng.uniform(1.8, 3.5)), 0.0, None)
    porta = (float(vrng.uniform(-20, 20)), wall_depth + float(vrng.uniform(45, 70)))
    for pts in branching_vessels(vrng, porta, int(vrng.integers(2, 4)), (20.0, 45.0), (-np.pi, np.pi), 0.25):
        add_vessel_longitudinal(
            parts, pts, float(vrng.uniform(1.2, 3.0)), 0.8, tissue("portal_wall", 10.0, 0.8)
        )
    for layer in parts.layers:
        model.add(moved(layer.shape, -shift, 0.0), layer.tissue)


def plan_liver(rng: np.random.Generator, size: int) -> PatientPlan:
    sex = sample_sex(rng, 0.5)
    organ = "liver" if rng.random() < 0.8 else "gallbladder"
    cat = LIVER if organ == "liver" else GALLBLADDER
    spec = None if rng.random() < NORMAL_P else sample_lesion(rng, cat)
    wall = body_wall(rng, fat=(6.0, 22.0), muscle=(6.0, 12.0))
    wall_depth = sum(w.thickness_mm for w in wall)
    anatomy_seed = int(rng.integers(0, 2**31 - 1))
    liver_label = ORGAN_LABEL if organ == "liver" else None
    liver_t = tissue("liver", 0.0, LIVER_ATT, rng, label=liver_label, texture_db=1.2, texture_scale_mm=3.0)
    u = rng.uniform(size=10)
    dia_depth = wall_depth + 60.0 + 40.0 * u[0]
    if spec is not None and organ == "liver":
        dia_depth = max(dia_depth, wall_depth + 2.0 * spec.max_radius_mm + 40.0)
    diaphragm = (-20.0 + 40.0 * u[1], dia_depth, 70.0 + 50.0 * u[2])
    # gallbladder: (long half-length, transverse half-width, AP half-depth), centre depth
    gb = (28.0 + 12.0 * u[3], 12.0 + 5.0 * u[4], 11.0 + 5.0 * u[5])
    gb_wall = 1.5 + 1.5 * u[6]
    gb_cz = wall_depth + 25.0 + gb[2] + 15.0 * u[7]
    if spec is not None and organ == "liver":
        r = spec.max_radius_mm
        lesion_c = (
            -15.0 + 30.0 * u[8],
            wall_depth + 15.0 + r + (dia_depth - wall_depth - 30.0 - 2 * r) * u[9],
        )
    elif spec is not None:
        aw, al, ah = spec.semi_axes_mm
        if spec.kind == "gallstone":
            lesion_c = (0.0, gb_cz + gb[2] - ah - 0.2)  # dependent, on the posterior wall
        elif spec.kind == "polyp":
            lesion_c = (0.0, gb_cz + (gb[2] - 0.6 * ah) * (1 if u[8] < 0.5 else -1))
        else:
            lesion_c = (0.0, gb_cz + gb[2] - 0.5 * ah)
    else:
        lesion_c = (0.0, gb_cz if organ == "gallbladder" else wall_depth + 50.0)
    parenchyma = Parenchyma(0.0, LIVER_ATT)
    gb_seed = int(rng.integers(0, 2**31 - 1))
    scenes = []
    for plane in image_planes(rng):
        k = PLANES.index(plane)
        gb_rx = gb[0] if plane == "longitudinal" else gb[1]
        grng = np.random.default_rng([gb_seed, k])
        gb_outer = StarShape(
            lesion_c[0] if organ == "gallbladder" else 45.0,
            gb_cz,
            gb_rx + gb_wall,
            gb[2] + gb_wall,
            angle_deg=float(grng.uniform(-10, 10)),
            harmonics=((2, float(grng.uniform(0.03, 0.08)), 0.0),),
            edge_mm=0.2,
        )
        gb_lumen = StarShape(
            gb_outer.cx,
            gb_outer.cz,
            gb_rx,
            gb[2],
            angle_deg=gb_outer.angle_deg,
            harmonics=gb_outer.harmonics,
            edge_mm=0.2,
        )
        clip = (
            gb_lumen
            if (organ == "gallbladder" and spec is not None and spec.kind != "gallbladder_carcinoma")
            else None
        )
        if spec is not None and organ == "gallbladder" and spec.kind == "gallstone":
            # keep the stone inside the lumen
            aw = spec.semi_axes_mm[0 if plane == "transverse" else 1]
            if aw > 0.8 * gb_rx:
                clip = None
        section = (
            build_section(spec, plane, lesion_c[0], lesion_c[1], parenchyma, clip=clip)
            if spec is not None
            else None
        )
        if section is not None:
            bounds = section.extent()
        else:
            bounds = (lesion_c[0] - 10.0, lesion_c[1] - 10.0, lesion_c[0] + 10.0, lesion_c[1] + 10.0)
        depth_mm = DEPTH_MM if organ == "liver" else GB_DEPTH_MM
        params, shift = fit_probe(rng, "curvilinear", depth_mm, bounds, 15.0, margin_mm=4.0)
        model = TissueModel(liver_t)
        add_body_wall(model, params, wall, rng)
        _liver_background(model, rng, shift, diaphragm, (anatomy_seed, k), wall_depth)
        gb_label = ORGAN_LABEL if organ == "gallbladder" else 0
        model.add(moved(gb_outer, -shift, 0.0), tissue("gallbladder_wall", 6.0, 0.7, label=gb_label))
        model.add(moved(gb_lumen, -shift, 0.0), with_label(BILE, gb_label))
        section = paint_lesion(model, section, shift)
        scenes.append(Scene(plane, params, model, section))
    return PatientPlan("liver", organ, sex, cat, spec, scenes)


simulate_liver = register("liver")(simulator(plan_liver))
