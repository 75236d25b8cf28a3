"""Domain randomisation of one lesion image: rendering nuisances that leave every label true.

Part of the opt-in realism knob ``domain_randomization`` (`sonofm.sim.domain_randomization` has
the why, the plumbing and the scanner nuisances). Per image, from that image's own stream, a
lesion gets:

- a rotation jitter about its centre (not for clipped lesions such as plaques and polyps, nor
  for extrathyroidal extension, whose meaning is its place in the capsule);
- a boundary blur width within its margin class (sharp margins stay below the PSF width,
  indistinct ones well above it);
- a solid-part echogenicity redrawn within the band its tag allows (`lesions.ECHO_DB`: a
  hypoechoic lesion stays darker than the parenchyma, an isoechoic one within +-1 dB);
- microcalcification count, size and brightness within the range where they stay punctate,
  visible echoes;
- a scale of the attenuation contrast that makes posterior enhancement/shadowing.

Labels are *measured* from the geometry and attenuation of the image (`base.render_patient`), so
they are true by construction; what this module guarantees is that they are the *same* labels as
without randomisation: the orientation class (taller-than-wide / wider-than-tall / neither) and
the posterior features are measured before and after, and a draw that would change them (or
weaken a clearly present posterior feature to a borderline one) is undone step by step:
posterior scale, then centre frequency (attenuation grows with it), then rotation, then every
lesion nuisance. Which step was kept goes to the manifest (``imaging.lesion_randomization``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sonofm.sim.domain_randomization import randomize_imaging, with_center_frequency
from sonofm.sim.imaging import ImagingParams
from sonofm.sim.phantoms.lesion_section import (
    ENHANCEMENT_DB,
    SHADOW_DB,
    ExtentCache,
    LesionSection,
    PosteriorProfile,
    _interior_points,
    posterior_from_model,
    posterior_labels,
    section_extent,
)
from sonofm.sim.phantoms.lesions import ECHO_DB, FLUID_ATTENUATION, LesionSpec, image_tags
from sonofm.sim.phantoms.placement import fits_in_fan
from sonofm.sim.phantoms.plan import Scene
from sonofm.sim.phantoms.shapes import Dots, Intersection, Union
from sonofm.sim.tissue import Band, Layer, Polygon, Shape, StarShape, TissueModel, Tube

# Rotation jitter (degrees, uniform +-): probe rotation and the lesion's own axis vary by about this
# much between clinical images of one lesion; much more would make most "parallel" lesions oblique.
# A draw that changes the orientation class or leaves the fan is halved (ROTATION_HALVINGS times),
# then dropped.
ROTATION_JITTER_DEG = 15.0
ROTATION_HALVINGS = 2
FAN_MARGIN_MM = 0.5  # a rotated lesion must stay this far inside the field of view
# Outline blur (mm, the width of the soft edge ramp). Sharp margins (circumscribed, micro-
# lobulated, spiculated, angular, irregular) stay below the lateral PSF width (~0.3-1 mm), so the
# transition still reads as a sharp line; indistinct ones stay well above it (wider than the
# 1.2-2.2 mm the catalogue draws, never near the sharp range).
SHARP_EDGE_MM = (0.05, 0.4)
INDISTINCT_EDGE_MM = (1.0, 2.8)
# Microcalcifications (punctate echogenic foci): a cluster of at least 4, radii 0.2-0.45 mm each
# varied by +-10 % (diameters 0.36-0.99 mm: below 1 mm by definition), 15-26 dB above the
# parenchyma (the catalogue draws 4-10 foci of radius 0.25-0.4 mm at +20 dB). A focus smaller than
# the PSF shows with its integrated echo (area x intensity), so a small one, or one in a hyperechoic
# lesion, is made at least as conspicuous against its surroundings as the catalogue's faintest
# focus against parenchyma (MICROCALC_MIN_ECHO_MM2: radius 0.25 mm at +20 dB): always a visible
# punctate echo (speckle can fade one focus, not a cluster of four). They keep a soft-tissue-like
# attenuation: too small to shadow, as in real scans.
MICROCALC_COUNT = (4, 14)
MICROCALC_RADIUS_MM = (0.2, 0.45)
MICROCALC_RADIUS_JITTER = 0.1
MICROCALC_DB = (15.0, 26.0)
MICROCALC_MIN_ECHO_MM2 = float(np.pi * 0.25**2 * 10.0 ** (20.0 / 10.0))
# Scale of the lesion's attenuation contrast to its parenchyma (the cause of enhancement and
# shadowing): weaker and stronger posterior features of the same class. Attenuation never falls
# below water's.
POSTERIOR_SCALE = (0.7, 1.5)
WATER_ATTENUATION = FLUID_ATTENUATION[0]
# "Clearly present": a posterior feature that passed thresholds this many times the calling ones
# (ENHANCEMENT_DB, SHADOW_DB) before randomisation must still pass them after.
CLEARLY_PRESENT_FACTOR = 1.5
# Margins whose tag is about where the lesion sits in its organ, so the lesion is not rotated.
NO_ROTATION_MARGINS = ("extrathyroidal_extension",)

_N_DRAWS = 7  # fixed number of uniforms per lesion image (plus one seed), whatever applies


@dataclass(frozen=True)
class LesionNuisance:
    """One image's draw of the lesion's rendering nuisances (None: that nuisance does not apply)."""

    rotation_deg: float
    edge_mm: float | None
    solid_echo_db: float | None  # solid part re parenchyma, within ECHO_DB[tag]
    microcalcifications: tuple[int, float, float] | None  # (count, radius mm, dB re parenchyma)
    posterior_scale: float
    points_seed: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record for the manifest (rounded)."""
        calc = self.microcalcifications
        return {
            "rotation_deg": round(self.rotation_deg, 3),
            "edge_mm": None if self.edge_mm is None else round(self.edge_mm, 3),
            "solid_echo_db": None if self.solid_echo_db is None else round(self.solid_echo_db, 3),
            "microcalcifications": None
            if calc is None
            else {"count": calc[0], "radius_mm": round(calc[1], 3), "above_parenchyma_db": round(calc[2], 3)},
            "posterior_scale": round(self.posterior_scale, 4),
        }


@dataclass
class RandomizedScene:
    """A scene after domain randomisation, what was drawn, and (for a lesion) its measured extent
    and posterior profile, so `base.render_patient` need not measure them again."""

    scene: Scene
    info: dict[str, Any] | None
    extent: tuple[float, float, float, float] | None = None
    posterior: PosteriorProfile | None = None


# --------------------------------------------------------------------------------------------- drawing


def _layer_named(section: LesionSection, name: str) -> Layer | None:
    return next((layer for layer in section.layers if layer.tissue.name == name), None)


def _is_clipped(section: LesionSection) -> bool:
    """Sections clipped to a lumen or organ (plaques, polyps) have an Intersection outline."""
    return not isinstance(section.outline, StarShape | Polygon)


def draw_nuisance(rng: np.random.Generator, spec: LesionSpec, section: LesionSection) -> LesionNuisance:
    """Draw this image's lesion nuisances (a fixed number of draws, whatever applies)."""
    u = rng.uniform(size=_N_DRAWS)
    points_seed = int(rng.integers(0, 2**31 - 1))
    free = section.parenchyma is not None and not _is_clipped(section)
    rotation = 0.0
    if free and not any(m in NO_ROTATION_MARGINS for m in spec.margins):
        rotation = ROTATION_JITTER_DEG * (2.0 * float(u[0]) - 1.0)
    edge = None
    if free:
        lo, hi = INDISTINCT_EDGE_MM if "indistinct" in spec.margins else SHARP_EDGE_MM
        edge = lo + (hi - lo) * float(u[1])
    echo = None
    if (
        section.parenchyma is not None
        and spec.echogenicity in ECHO_DB
        and _layer_named(section, "lesion_solid")
    ):
        lo, hi = ECHO_DB[spec.echogenicity]
        echo = lo + (hi - lo) * float(u[2])
    calc = None  # new foci are placed in the solid part: only where it is known and unclipped
    if free and section.solid_region is not None and _layer_named(section, "microcalcification"):
        c_lo, c_hi = MICROCALC_COUNT
        r_lo, r_hi = MICROCALC_RADIUS_MM
        d_lo, d_hi = MICROCALC_DB
        count = int(c_lo + min(int(float(u[3]) * (c_hi - c_lo + 1)), c_hi - c_lo))
        radius = r_lo + (r_hi - r_lo) * float(u[4])
        solid_db = spec.solid_echo_db if echo is None else echo
        calc = (count, radius, microcalc_db(d_lo + (d_hi - d_lo) * float(u[5]), radius, solid_db))
    scale = 1.0
    if section.parenchyma is not None:
        scale = POSTERIOR_SCALE[0] + (POSTERIOR_SCALE[1] - POSTERIOR_SCALE[0]) * float(u[6])
    return LesionNuisance(rotation, edge, echo, calc, scale, points_seed)


# --------------------------------------------------------------------------------------------- applying
# Three steps, so the expensive measurements are shared: content (echogenicity, microcalcifications)
# and rotation change what the mask and calipers see; edge blur and posterior strength change only
# how the lesion renders (the mask takes w >= 0.5, which no edge width moves).


def _map_leaves(shape: Shape, fn: Callable[[Shape], Shape]) -> Shape:
    """`shape` with `fn` applied to every leaf of its Intersection/Union tree (rebuilt, not mutated)."""
    if isinstance(shape, Intersection):
        return Intersection([_map_leaves(s, fn) for s in shape.shapes], shape.edge_mm)
    if isinstance(shape, Union):
        return Union([_map_leaves(s, fn) for s in shape.shapes], shape.edge_mm)
    return fn(shape)


def microcalc_db(drawn_db: float, radius_mm: float, solid_db: float) -> float:
    """Echogenicity of a microcalcification (dB re parenchyma): the drawn value, raised where needed
    so a focus of `radius_mm` integrates at least MICROCALC_MIN_ECHO_MM2 of echo over the brighter of
    the parenchyma and the solid part around it (`solid_db`)."""
    smallest = radius_mm * (1.0 - MICROCALC_RADIUS_JITTER)
    visible_db = 10.0 * np.log10(MICROCALC_MIN_ECHO_MM2 / (np.pi * smallest**2))
    return float(max(drawn_db, max(solid_db, 0.0) + visible_db))


def apply_content(section: LesionSection, spec: LesionSpec, nuis: LesionNuisance) -> LesionSection:
    """Solid-part echogenicity and microcalcifications (count, size, brightness, new positions in
    the solid part); one layer per old layer, same order, other shapes shared (not copied)."""
    par = section.parenchyma
    if par is None:
        return section
    echo_shift = 0.0 if nuis.solid_echo_db is None else nuis.solid_echo_db - spec.solid_echo_db
    layers = []
    for layer in section.layers:
        shape, t = layer.shape, layer.tissue
        if t.name in ("lesion_solid", "lesion_patch") and echo_shift:
            t = dataclasses.replace(t, echogenicity_db=t.echogenicity_db + echo_shift)
        elif t.name == "microcalcification" and nuis.microcalcifications is not None:
            count, radius, above = nuis.microcalcifications
            t = dataclasses.replace(t, echogenicity_db=par.echo_db + above)  # `microcalc_db` at drawing
            region = section.solid_region
            if isinstance(shape, Dots) and region is not None:  # (`draw_nuisance` checked both)
                pts_rng = np.random.default_rng(nuis.points_seed)
                pts = _interior_points(region, pts_rng, count, 0.75, 0.05)
                jitter = pts_rng.uniform(1.0 - MICROCALC_RADIUS_JITTER, 1.0 + MICROCALC_RADIUS_JITTER, count)
                shape = Dots(pts, radius * jitter, shape.edge_mm)
        layers.append(layer if (shape is layer.shape and t is layer.tissue) else Layer(shape, t))
    return dataclasses.replace(section, layers=layers)


def apply_rendering(section: LesionSection, nuis: LesionNuisance) -> LesionSection:
    """Outline blur width and posterior strength (the attenuation contrast to the parenchyma,
    scaled, never below water); one layer per old layer, same order."""
    par = section.parenchyma
    if par is None:
        return section
    outline, base = section.outline, section.base
    swap: Callable[[Shape], Shape] = lambda s: s  # noqa: E731
    if nuis.edge_mm is not None:
        old = outline
        outline = dataclasses.replace(old, edge_mm=nuis.edge_mm)  # type: ignore[type-var]
        base = outline if base is old else base  # type: ignore[assignment]
        swap = lambda s: outline if s is old else s  # noqa: E731
    layers = []
    for layer in section.layers:
        shape = layer.shape if nuis.edge_mm is None else _map_leaves(layer.shape, swap)
        t = layer.tissue
        # microcalcifications are left alone: too small to shadow, whatever their attenuation
        scaled = nuis.posterior_scale != 1.0 and t.name != "microcalcification"
        if scaled and t.attenuation_db_cm_mhz != par.attenuation:
            att = par.attenuation + nuis.posterior_scale * (t.attenuation_db_cm_mhz - par.attenuation)
            t = dataclasses.replace(t, attenuation_db_cm_mhz=max(att, WATER_ATTENUATION))
        layers.append(Layer(shape, t))
    return dataclasses.replace(section, layers=layers, outline=outline, base=base)


def _rotate_points(pts: np.ndarray, pivot: np.ndarray, c: float, s: float) -> np.ndarray:
    d = np.asarray(pts, dtype=np.float64) - pivot
    return pivot + np.stack([c * d[..., 0] - s * d[..., 1], s * d[..., 0] + c * d[..., 1]], axis=-1)


def _rotate_shape(shape: Shape, pivot: np.ndarray, deg: float, memo: dict[int, Shape]) -> Shape:
    """`shape` turned by `deg` about `pivot` (StarShape's angle convention). A Band (a fluid-debris
    level) stays horizontal: gravity sets it, not the lesion's axis. `memo` keeps shapes shared
    between layers (the outline inside an intersection) shared after the turn."""
    done = memo.get(id(shape))
    if done is not None:
        return done
    a = np.deg2rad(deg)
    c, s = float(np.cos(a)), float(np.sin(a))
    out: Shape
    if isinstance(shape, StarShape):
        (cx, cz) = _rotate_points(np.array([shape.cx, shape.cz]), pivot, c, s)
        out = dataclasses.replace(shape, cx=float(cx), cz=float(cz), angle_deg=shape.angle_deg + deg)
    elif isinstance(shape, Polygon):
        out = Polygon(_rotate_points(shape.vertices, pivot, c, s), shape.edge_mm)
    elif isinstance(shape, Dots):
        out = Dots(_rotate_points(shape.centers, pivot, c, s), shape.radii, shape.edge_mm)
    elif isinstance(shape, Tube):
        out = Tube(_rotate_points(shape.points, pivot, c, s), shape.radius, shape.edge_mm)
    elif isinstance(shape, Band):
        out = shape
    elif isinstance(shape, Intersection):
        out = Intersection([_rotate_shape(x, pivot, deg, memo) for x in shape.shapes], shape.edge_mm)
    elif isinstance(shape, Union):
        out = Union([_rotate_shape(x, pivot, deg, memo) for x in shape.shapes], shape.edge_mm)
    else:
        raise TypeError(f"cannot rotate a {type(shape).__name__}")
    memo[id(shape)] = out  # the section holds `shape` for the whole turn, so its id stays unique
    return out


def _comet_tail_shift(tail: Tube, foci_old: np.ndarray, foci_new: np.ndarray) -> np.ndarray:
    """How far the focus a comet tail hangs from moved. Reverberation runs along the beam, so the
    tail is translated with its focus, never turned."""
    top = tail.points[0]
    below = foci_old[:, 1] <= top[1]
    cand = np.flatnonzero(below) if below.any() else np.arange(len(foci_old))
    k = cand[np.argmin(np.hypot(*(foci_old[cand] - top).T))]
    return foci_new[k] - foci_old[k]


def rotate_section(section: LesionSection, deg: float) -> LesionSection:
    """The section turned by `deg` about its centre, one new layer per old layer (same order);
    comet tails hang below their foci as before."""
    if deg == 0.0:
        return section
    pivot = np.array([section.base.cx, section.base.cz])
    memo: dict[int, Shape] = {}
    layers = []
    for layer in section.layers:
        if layer.tissue.name == "comet_tail":
            layers.append(layer)  # moved below, with its focus
        else:
            layers.append(Layer(_rotate_shape(layer.shape, pivot, deg, memo), layer.tissue))
    colloid = next((i for i, layer in enumerate(section.layers) if layer.tissue.name == "colloid"), None)
    if colloid is not None:
        old_foci = section.layers[colloid].shape
        new_foci = layers[colloid].shape
        for i, layer in enumerate(layers):
            if layer.tissue.name == "comet_tail" and isinstance(layer.shape, Tube):
                assert isinstance(old_foci, Dots) and isinstance(new_foci, Dots)
                d = _comet_tail_shift(layer.shape, old_foci.centers, new_foci.centers)
                tube = Tube(layer.shape.points + d, layer.shape.radius, layer.shape.edge_mm)
                layers[i] = Layer(tube, layer.tissue)
    solid = section.solid_region
    return dataclasses.replace(
        section,
        layers=layers,
        outline=_rotate_shape(section.outline, pivot, deg, memo),
        base=_rotate_shape(section.base, pivot, deg, memo),  # type: ignore[arg-type]
        solid_region=None if solid is None else _rotate_shape(solid, pivot, deg, memo),
    )


def replace_lesion(model: TissueModel, old: LesionSection, new: LesionSection) -> TissueModel | None:
    """A new model with `old`'s layers swapped for `new`'s, in place (painting order kept); None
    when the model does not hold `old`'s layers (a region that copied them)."""
    index = {id(layer): i for i, layer in enumerate(old.layers)}
    if len(new.layers) != len(old.layers) or sum(id(layer) in index for layer in model.layers) != len(index):
        return None
    layers = [new.layers[index[id(layer)]] if id(layer) in index else layer for layer in model.layers]
    return TissueModel(model.background, layers)


# --------------------------------------------------------------------------------------------- guarding


Extent = tuple[float, float, float, float]


def _shape_tags(spec: LesionSpec, extent: Extent) -> list[str]:
    x0, z0, x1, z1 = extent
    return image_tags(spec, x1 - x0, z1 - z0, [])["shape"]


def _clear(profile: PosteriorProfile) -> set[str]:
    f = CLEARLY_PRESENT_FACTOR
    return set(posterior_labels(profile, f * ENHANCEMENT_DB, f * SHADOW_DB))


def _posterior_kept(ref: PosteriorProfile, new: PosteriorProfile) -> bool:
    """Same posterior labels, and every clearly present feature still clearly present."""
    return new.labels == ref.labels and _clear(ref) <= _clear(new)


def _reports_orientation(spec: LesionSpec) -> bool:
    """Whether the shape tags of this lesion's images include a measured orientation class."""
    return spec.orientation_tags and spec.contour != "round"


def _rotation_keeping_class(
    section: LesionSection,
    spec: LesionSpec,
    deg: float,
    ref_shape: list[str],
    params: ImagingParams,
    cache: ExtentCache,
) -> tuple[float, LesionSection]:
    """The largest of deg, deg/2, ... (ROTATION_HALVINGS times) that keeps the orientation class and
    the lesion in the fan, and the turned section; (0, section) if none does."""
    for _ in range(ROTATION_HALVINGS + 1):
        if deg == 0.0:
            break
        turned = rotate_section(section, deg)
        extent = section_extent(turned, cache=cache)
        if _shape_tags(spec, extent) == ref_shape and fits_in_fan(params, extent, FAN_MARGIN_MM):
            return deg, turned
        deg *= 0.5
    return 0.0, section


def randomize_lesion(
    scene: Scene, spec: LesionSpec, params: ImagingParams, rng: np.random.Generator
) -> RandomizedScene:
    """Scene `scene` (its lesion drawn by `spec`) rendered with scanner `params` (already randomised)
    and lesion nuisances drawn from `rng`, with the same labels as the scene itself.

    Tries the full draw, then undoes the posterior scale, the centre frequency and the rotation in
    turn, keeping the first that measures the same orientation class and posterior features; the
    last resort is the planned lesion at its planned frequency, whose labels are the reference.
    """
    section = scene.lesion
    assert section is not None
    nuis = draw_nuisance(rng, spec, section)
    cache: ExtentCache = {}  # every extent goes through it: shapes shared by the variants count once

    def extent_of(sec: LesionSection) -> Extent:
        return section_extent(sec, cache=cache)

    # Only BI-RADS/TI-RADS organs report an orientation class, and never for round lesions: elsewhere
    # the shape tags do not depend on the extent, which is then measured only where it is reported.
    ref_shape = _shape_tags(spec, extent_of(section)) if _reports_orientation(spec) else [spec.contour]
    ref_post = posterior_from_model(scene.model, section, scene.params, extent_cache=cache)
    own_f0 = with_center_frequency(params, scene.params.center_freq_mhz)

    content = apply_content(section, spec, nuis)
    deg, turned = _rotation_keeping_class(content, spec, nuis.rotation_deg, ref_shape, scene.params, cache)
    drawn = dataclasses.replace(nuis, rotation_deg=deg)
    unscaled = dataclasses.replace(drawn, posterior_scale=1.0)
    stages = [  # (what is kept, scanner, nuisances, section before the rendering step)
        ("all", params, drawn, turned),
        ("posterior_scale_undone", params, unscaled, turned),
        ("frequency_undone", own_f0, unscaled, turned),
        ("rotation_undone", own_f0, dataclasses.replace(unscaled, rotation_deg=0.0), content),
    ]
    tried: list[tuple[ImagingParams, LesionNuisance, LesionSection]] = []
    for name, p, n, geometry in stages:
        if any(p is q and n == m and geometry is g for q, m, g in tried):
            continue  # e.g. no posterior scale to undo: the same as the stage before
        tried.append((p, n, geometry))
        new_sec = apply_rendering(geometry, n)  # the mask and so the extent are those of `geometry`
        model = replace_lesion(scene.model, section, new_sec)
        if model is None:
            break
        extent = extent_of(geometry)
        if _shape_tags(spec, extent) != ref_shape:
            continue
        post = posterior_from_model(model, new_sec, p, extent_cache=cache)
        if _posterior_kept(ref_post, post):
            out = dataclasses.replace(scene, params=p, model=model, lesion=new_sec)
            return RandomizedScene(out, {**n.to_dict(), "kept": name}, extent, post)
    # nothing of the lesion randomised: its labels are those of the planned scene, measured above
    out = dataclasses.replace(scene, params=own_f0)
    return RandomizedScene(out, {"kept": "lesion_unchanged"}, extent_of(section), ref_post)


def randomize_scene(scene: Scene, spec: LesionSpec | None, rng: np.random.Generator) -> RandomizedScene:
    """Domain randomisation of one planned image: scanner nuisances for every image, lesion
    nuisances (label-preserving, see the module docstring) where it shows a lesion."""
    params = randomize_imaging(scene.params, rng)
    if spec is None or scene.lesion is None:
        return RandomizedScene(dataclasses.replace(scene, params=params), None)
    return randomize_lesion(scene, spec, params, rng)
