"""Obstetric phantom (transabdominal curvilinear probe): the fetus in amniotic fluid.

Maternal abdominal wall, the anterior myometrium, anechoic amniotic fluid (its low attenuation
brightens everything behind it), the placenta (anterior or posterior), and either
- the fetal head in the axial (transventricular) plane: the bright ossified skull (attenuating,
  so the brain behind the near wall is darker), the midline echo of the falx interrupted by the
  cavum septi pellucidi, the thalami, the echogenic choroid plexus in the far lateral ventricle; or
- the fetal abdomen in the axial plane: skin, liver, the fluid-filled stomach, the umbilical vein
  (vessel lumen) and the spine's ossification centres (bright, shadowing) posteriorly.
The fetus is the organ (label 2). Findings stay within what the taxonomy can say: normal studies
(the majority), choroid plexus cysts (benign cysts in the head view) and fetal ascites (a fluid
collection outlining the abdominal contents). Fetal biometry (BPD, HC, AC) has no measurement id
in the taxonomy, so none is reported.
"""

from __future__ import annotations

import numpy as np

from sonofm.sim.phantoms.anatomy import BLOOD, LUMEN_LABEL, ORGAN_LABEL, LayerSpec, tissue, with_label
from sonofm.sim.phantoms.base import simulator
from sonofm.sim.phantoms.lesion_section import LesionSection, Parenchyma, build_section
from sonofm.sim.phantoms.lesions import FLUID_DB, LesionSpec, lesion_catalogue, sample_lesion
from sonofm.sim.phantoms.placement import assemble, place_probe, union_bounds
from sonofm.sim.phantoms.plan import PatientPlan, Scene, n_images
from sonofm.sim.phantoms.shapes import Arc, Dots, Intersection
from sonofm.sim.registry import register
from sonofm.sim.tissue import Band, Ellipse, Layer, StarShape, Tissue, TissueModel, Tube

NORMAL_P = 0.5
DEPTH_MM = (110.0, 160.0)
BRAIN_DB, BRAIN_ATT = -14.0, 0.6
CHOROID_DB = 4.0
LIVER_DB, LIVER_ATT = -8.0, 0.6
AMNIOTIC = Tissue("amniotic_fluid", FLUID_DB, 0.005)

FETUS = lesion_catalogue("fetus")


def _to_world(c: tuple[float, float], theta: float, u: float, v: float) -> tuple[float, float]:
    """Head/abdomen-local (u along the long axis, v across, + deeper at theta 0) to world mm."""
    ct, st = np.cos(theta), np.sin(theta)
    return (float(c[0] + u * ct - v * st), float(c[1] + u * st + v * ct))


def _head(parts: TissueModel, c: tuple[float, float], ofd: float, bpd: float, deg: float, rng) -> tuple:
    """Skull, brain, falx, cavum septi pellucidi, thalami, choroid plexus (all labelled fetus).
    Returns (skull outline, choroid plexus centre and radii)."""
    th = np.deg2rad(deg)
    a, b = ofd / 2, bpd / 2
    skull_t = rng.uniform(1.8, 2.8)
    skull = Ellipse(c[0], c[1], a, b, angle_deg=deg, edge_mm=0.2)
    parts.add(skull, tissue("skull", 16.0, 4.0, label=ORGAN_LABEL))
    parts.add(
        Ellipse(c[0], c[1], a - skull_t, b - skull_t, angle_deg=deg, edge_mm=0.2),
        tissue("brain", BRAIN_DB, BRAIN_ATT, rng, label=ORGAN_LABEL, texture_db=2.0, texture_scale_mm=3.0),
    )
    front = 1.0 if rng.random() < 0.5 else -1.0  # which end is the forehead
    falx = np.array([_to_world(c, th, -0.92 * a, 0.0), _to_world(c, th, 0.92 * a, 0.0)])
    parts.add(Tube(falx, 0.5, edge_mm=0.2), tissue("falx", 4.0, 0.7, label=ORGAN_LABEL))
    csp = _to_world(c, th, front * 0.38 * a, 0.0)
    parts.add(
        Ellipse(*csp, 0.1 * a, 0.045 * b + 1.0, angle_deg=deg, edge_mm=0.3), with_label(AMNIOTIC, ORGAN_LABEL)
    )
    for side in (-1.0, 1.0):
        parts.add(
            Ellipse(
                *_to_world(c, th, front * 0.05 * a, side * 0.18 * b),
                0.16 * a,
                0.12 * b,
                angle_deg=deg,
                edge_mm=0.8,
            ),
            tissue("thalamus", BRAIN_DB - 4.0, BRAIN_ATT, label=ORGAN_LABEL),
        )
    cp_c = _to_world(c, th, -front * 0.45 * a, 0.42 * b)  # far hemisphere, posterior horn region
    cp_r = (0.22 * a, 0.12 * b + 1.5)
    parts.add(
        Ellipse(*cp_c, *cp_r, angle_deg=deg, edge_mm=0.5),
        tissue("choroid_plexus", CHOROID_DB, BRAIN_ATT, rng, label=ORGAN_LABEL, texture_db=1.5),
    )
    return skull, cp_c, cp_r


def _abdomen(parts: TissueModel, c: tuple[float, float], r: float, rng) -> StarShape:
    """Fetal abdomen in cross-section with the spine posterior (deep)."""
    outer = StarShape(c[0], c[1], r, r * rng.uniform(0.92, 1.0), harmonics=((3, 0.02, 0.0),), edge_mm=0.3)
    parts.add(outer, tissue("fetal_skin", 6.0, 0.8, label=ORGAN_LABEL))
    parts.add(
        StarShape(c[0], c[1], outer.rx - 1.2, outer.rz - 1.2, harmonics=outer.harmonics, edge_mm=0.3),
        tissue(
            "fetal_liver", LIVER_DB, LIVER_ATT, rng, label=ORGAN_LABEL, texture_db=1.5, texture_scale_mm=2.5
        ),
    )
    side = 1.0 if rng.random() < 0.5 else -1.0
    parts.add(
        Ellipse(c[0] + side * 0.4 * r, c[1] - 0.05 * r, 0.22 * r, 0.16 * r, edge_mm=0.3),
        with_label(AMNIOTIC, ORGAN_LABEL),
    )  # stomach
    uv = np.array([[c[0] - side * 0.05 * r, c[1] - 0.55 * r], [c[0] - side * 0.25 * r, c[1] + 0.05 * r]])
    parts.add(Tube(uv, 0.06 * r + 0.6, edge_mm=0.1), with_label(BLOOD, LUMEN_LABEL))  # umbilical vein
    spine = np.array(
        [[c[0], c[1] + 0.78 * r], [c[0] - 0.13 * r, c[1] + 0.62 * r], [c[0] + 0.13 * r, c[1] + 0.62 * r]]
    )
    parts.add(
        Dots(spine, 0.07 * r + 0.5, edge_mm=0.2), tissue("ossification_centre", 16.0, 6.0, label=ORGAN_LABEL)
    )
    return outer


def ascites_section(spec: LesionSpec, c: tuple[float, float], r: float, fluid_att: float) -> LesionSection:
    """Fluid in the fetal peritoneal cavity: a rim under the abdominal wall, anterior to the spine."""
    rim = max(spec.semi_axes_mm)
    r_out = r - 1.5
    shape = Intersection(
        [Arc(c[0], c[1], r_out - rim, r_out, edge_mm=0.15), Band.flat(c[1] - 2 * r, c[1] + 0.35 * r)]
    )
    base = StarShape(c[0], c[1] - 0.3 * r, r_out, 0.65 * r_out, edge_mm=0.15)
    return LesionSection(
        [Layer(shape, Tissue("ascites", FLUID_DB, fluid_att, spec.label))],
        shape,
        base,
        "transverse",
        spec.label,
    )


def plan_obstetric(rng: np.random.Generator, size: int) -> PatientPlan:
    spec = None if rng.random() < NORMAL_P else sample_lesion(rng, FETUS)
    skin, fat, muscle = (float(v) for v in rng.uniform([1.5, 4.0, 4.0], [2.5, 18.0, 9.0]))
    wall = [
        LayerSpec(skin, tissue("skin", 6.0, 0.9)),
        LayerSpec(fat, tissue("fat", -8.0, 0.5, rng, texture_db=1.5, texture_scale_mm=4.0)),
        LayerSpec(muscle, tissue("rectus", -9.0, 1.0, rng, texture_db=2.5, texture_scale_mm=1.5)),
        LayerSpec(5.0 + 5.0 * float(rng.random()), tissue("myometrium", -3.0, 0.8, rng, texture_db=1.5)),
    ]
    wd = sum(w.thickness_mm for w in wall)
    u = rng.uniform(size=12)
    ofd = 65.0 + 45.0 * u[0]  # occipito-frontal diameter: about 18 to 34 weeks
    bpd = ofd * (0.75 + 0.07 * u[1])
    ab_r = 0.45 * ofd * (0.95 + 0.1 * u[2])
    anterior_placenta = u[3] < 0.5
    pl_th = 20.0 + 20.0 * u[4]
    gap = 8.0 + 20.0 * u[5] + (pl_th if anterior_placenta else 0.0)
    base_deg = -25.0 + 50.0 * u[6]
    seed = int(rng.integers(0, 2**31 - 1))
    placenta = tissue("placenta", 3.0, 0.7, rng, texture_db=2.5, texture_scale_mm=3.0)
    deep_t = tissue("maternal_tissue", -6.0, 0.8, rng, texture_db=3.0, texture_scale_mm=3.0)
    if spec is None:
        views = ["head" if rng.random() < 0.6 else "abdomen" for _ in range(n_images(rng, 2, 4))]
        views[:2] = ["head", "abdomen"]
    else:
        views = ["head" if spec.kind == "choroid_plexus_cyst" else "abdomen"] * n_images(rng, 2, 4)
    scenes = []
    for k, view in enumerate(views):
        prng = np.random.default_rng([seed, k])
        half = 0.5 * bpd if view == "head" else ab_r
        c = (0.0, wd + gap + half)
        parts = TissueModel(AMNIOTIC)
        far = c[1] + half + 10.0 + 15.0 * float(prng.random())
        if anterior_placenta:  # under the myometrium, following the probe like the wall
            parts.add(Band.flat(far, far + 300.0), deep_t)
        else:
            parts.add(Band.flat(far, far + pl_th), placenta)
            parts.add(Band.flat(far + pl_th, far + 300.0), deep_t)
        section = None
        if view == "head":
            deg = base_deg + float(prng.uniform(-10, 10))
            _, cp_c, cp_r = _head(parts, c, ofd, bpd, deg, prng)
            if spec is not None:
                room = max(cp_r[0] - spec.semi_axes_mm[0] - 0.5, 0.0)
                t = np.deg2rad(deg)
                off = (float(u[7]) - 0.5) * room
                section = build_section(
                    spec,
                    "transverse",
                    cp_c[0] + off * np.cos(t),
                    cp_c[1] + off * np.sin(t),
                    Parenchyma(CHOROID_DB, BRAIN_ATT),
                )
            target = (c[0] - 0.5 * ofd, c[1] - 0.5 * bpd, c[0] + 0.5 * ofd, c[1] + 0.5 * bpd)
        else:
            body = _abdomen(parts, c, ab_r, prng)
            if spec is not None:
                inner_r = 0.97 * min(body.rx, body.rz)  # inside the skin whatever the harmonics
                section = ascites_section(spec, c, inner_r, spec.fluid_attenuation)
            target = (c[0] - ab_r, c[1] - ab_r, c[0] + ab_r, c[1] + ab_r)
        if section is not None:
            target = union_bounds(target, section.extent())
        params, shift = place_probe(rng, "curvilinear", DEPTH_MM, target, 10.0, margin_mm=4.0)
        layers = [*wall, LayerSpec(pl_th, placenta)] if anterior_placenta else wall
        model, section = assemble(AMNIOTIC, params, layers, parts, section, shift, rng)
        scenes.append(Scene("transverse", params, model, section, {}, {}))
    return PatientPlan("obstetric", "fetus", "F", FETUS, spec, scenes)


simulate_obstetric = register("obstetric")(simulator(plan_obstetric))
