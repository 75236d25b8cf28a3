"""Background anatomy shared by the region phantoms: body-wall layers, vessels, bright interfaces.

Tissue values are dB of backscatter relative to reference parenchyma (0 dB) and one-way
attenuation in dB/cm/MHz, from typical soft-tissue values (fat ~0.5, muscle ~1, liver ~0.5,
blood ~0.18, water ~0.002, bone/calcium >> 5, air: total reflection, modelled as a bright
interface with very high attenuation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sonofm.sim.imaging import ImagingParams
from sonofm.sim.phantoms.shapes import Arc
from sonofm.sim.tissue import Band, Ellipse, Shape, StarShape, Tissue, TissueModel, Tube

ORGAN_LABEL = 2
LUMEN_LABEL = 9
FLUID_DB = -80.0

BLOOD = Tissue("blood", FLUID_DB, 0.18)
URINE = Tissue("urine", FLUID_DB, 0.005)
BILE = Tissue("bile", FLUID_DB, 0.01)


def tissue(
    name: str,
    echo_db: float,
    att: float,
    rng: np.random.Generator | None = None,
    *,
    label: int | None = None,
    texture_db: float = 0.0,
    texture_scale_mm: float = 2.0,
) -> Tissue:
    """A Tissue whose texture seed (if textured) comes from `rng`, so texture differs per patient."""
    seed = int(rng.integers(0, 2**31 - 1)) if rng is not None else 0
    return Tissue(name, echo_db, att, label, texture_db, texture_scale_mm, seed)


def with_label(t: Tissue, label: int | None) -> Tissue:
    return Tissue(
        t.name,
        t.echogenicity_db,
        t.attenuation_db_cm_mhz,
        label,
        t.texture_db,
        t.texture_scale_mm,
        t.texture_seed,
    )


def wavy_curve(
    rng: np.random.Generator, x_range: tuple[float, float], z0: float, amp_mm: float, n: int = 9
) -> tuple[list[float], list[float]]:
    """Sample points of a gently undulating depth curve z(x) around z0 (an organ or fat boundary)."""
    xs = np.linspace(x_range[0], x_range[1], n)
    zs = z0 + amp_mm * np.cumsum(rng.normal(0, 0.5, n))
    zs = zs - (zs.mean() - z0)
    return xs.tolist(), zs.tolist()


@dataclass
class LayerSpec:
    """One body-wall layer: thickness and tissue (skin, fat, muscle, fascia)."""

    thickness_mm: float
    tissue: Tissue
    wave_mm: float = 0.0  # undulation amplitude of its lower boundary


def body_wall(
    rng: np.random.Generator,
    *,
    fat: tuple[float, float] = (6.0, 20.0),
    muscle: tuple[float, float] = (5.0, 12.0),
    muscle_name: str = "muscle",
    peritoneum: bool = True,
) -> list[LayerSpec]:
    """Skin, subcutaneous fat, muscle (and peritoneum) of an adult body wall, thicknesses in mm.

    One builder for every transabdominal region, so their walls differ only by these ranges.
    """
    lo, hi = [1.5, fat[0], muscle[0]], [2.5, fat[1], muscle[1]]
    skin, fat_mm, muscle_mm = (float(v) for v in rng.uniform(lo, hi))
    layers = [
        LayerSpec(skin, tissue("skin", 6.0, 0.9)),
        LayerSpec(fat_mm, tissue("fat", -8.0, 0.5, rng, texture_db=1.5, texture_scale_mm=4.0)),
        LayerSpec(muscle_mm, tissue(muscle_name, -9.0, 1.0, rng, texture_db=2.5, texture_scale_mm=1.5)),
    ]
    if peritoneum:
        layers.append(LayerSpec(1.0, tissue("peritoneum", 8.0, 0.8)))
    return layers


def add_body_wall(
    model: TissueModel,
    params: ImagingParams,
    layers: Sequence[LayerSpec],
    rng: np.random.Generator,
    x_range: tuple[float, float] = (-200.0, 200.0),
) -> float:
    """Paint stacked superficial layers under the probe; returns the depth of their bottom at x=0.

    Linear probes flatten the skin (flat bands); a curvilinear probe presses its curved face into
    the skin, so the layers follow arcs concentric with the probe's apex.
    """
    depth = 0.0
    # the wall is never the organ of interest, even over an organ used as background tissue
    layers = [
        LayerSpec(
            ly.thickness_mm, with_label(ly.tissue, 0) if ly.tissue.label is None else ly.tissue, ly.wave_mm
        )
        for ly in layers
    ]
    if params.probe == "curvilinear":
        r0 = float(params.radius_mm or 0.0)
        for spec in layers:
            model.add(Arc(0.0, -r0, r0 + depth - 0.5, r0 + depth + spec.thickness_mm), spec.tissue)
            depth += spec.thickness_mm
        return depth
    prev = ([x_range[0], x_range[1]], [-5.0, -5.0])
    for spec in layers:
        bottom = depth + spec.thickness_mm
        if spec.wave_mm > 0:
            bx, bz = wavy_curve(rng, x_range, bottom, spec.wave_mm)
        else:
            bx, bz = [0.0], [bottom]
        model.add(Band(prev[0], prev[1], bx, bz), spec.tissue)
        prev = (bx, bz)
        depth = bottom
    return depth


def add_vessel_transverse(
    model: TissueModel,
    cx: float,
    cz: float,
    rx: float,
    rz: float,
    wall_mm: float,
    wall: Tissue,
    lumen: Tissue = BLOOD,
) -> Shape:
    """A vessel in cross-section: wall ring then lumen (label 9). Returns the lumen shape."""
    model.add(Ellipse(cx, cz, rx + wall_mm, rz + wall_mm, edge_mm=0.1), wall)
    lum = Ellipse(cx, cz, rx, rz, edge_mm=0.1)
    model.add(lum, with_label(lumen, LUMEN_LABEL))
    return lum


def add_vessel_longitudinal(
    model: TissueModel,
    points: np.ndarray,
    radius: float,
    wall_mm: float,
    wall: Tissue | None,
    lumen: Tissue = BLOOD,
) -> Shape:
    """A vessel cut along its length (a tube along `points`), optionally with a bright wall."""
    if wall is not None and wall_mm > 0:
        model.add(Tube(points, radius + wall_mm, edge_mm=0.1), wall)
    lum = Tube(points, radius, edge_mm=0.1)
    model.add(lum, with_label(lumen, LUMEN_LABEL))
    return lum


def branching_vessels(
    rng: np.random.Generator,
    origin: tuple[float, float],
    n: int,
    length: tuple[float, float],
    angle_range: tuple[float, float],
    bend: float = 0.25,
) -> list[np.ndarray]:
    """Polylines fanning out from `origin` (hepatic or portal branches in one plane)."""
    out = []
    for _ in range(n):
        a = rng.uniform(*angle_range)
        ln = rng.uniform(*length)
        pts = [np.array(origin, dtype=np.float64)]
        for _k in range(4):
            a += rng.normal(0, bend)
            pts.append(pts[-1] + ln / 4 * np.array([np.cos(a), np.sin(a)]))
        out.append(np.array(pts))
    return out


def bright_line(points: np.ndarray, thickness_mm: float, echo_db: float, att: float) -> tuple[Shape, Tissue]:
    """A specular interface (fascia, Cooper's ligament, capsule, diaphragm) as a thin tube."""
    return Tube(np.asarray(points, dtype=np.float64), thickness_mm / 2.0, edge_mm=0.1), Tissue(
        "interface", echo_db, att
    )


def rounded_organ(
    cx: float,
    cz: float,
    rx: float,
    rz: float,
    rng: np.random.Generator,
    *,
    angle_deg: float = 0.0,
    lumpiness: float = 0.04,
    edge_mm: float = 0.3,
) -> StarShape:
    """A smooth organ outline: an ellipse with one or two gentle low-order harmonics."""
    harm = tuple((int(k), float(rng.uniform(0, lumpiness)), float(rng.uniform(0, 2 * np.pi))) for k in (2, 3))
    return StarShape(cx, cz, rx, rz, angle_deg=angle_deg, harmonics=harm, edge_mm=edge_mm)
