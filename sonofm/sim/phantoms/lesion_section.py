"""A lesion cut by one imaging plane: its shapes and tissues, its exact extent, its posterior features.

`build_section(spec, plane, cx, cz, parenchyma)` turns a sampled `LesionSpec` (`lesions`) into
the layers the region paints last; `section_extent` measures it as calipers on the mask would;
`posterior_from_model` calls enhancement/shadowing from the attenuation the lesion adds along
this image's beams, so the reported labels agree with what the physics renders.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sonofm.sim.phantoms.lesions import (
    CALC_ATTENUATION,
    CALC_DB,
    DEBRIS_DB,
    FLUID_DB,
    LESION_LABEL,
    LesionSpec,
)
from sonofm.sim.phantoms.shapes import Dots, Intersection, moved, star_local_to_world, star_points
from sonofm.sim.tissue import Band, Layer, Polygon, Shape, StarShape, Tissue, TissueModel, Tube

PLANES = ("transverse", "longitudinal")


# Thresholds (round-trip dB along the beam, at the image's centre frequency) for calling posterior
# features from the attenuation the lesion adds: what a reader would call "visible".
ENHANCEMENT_DB = -3.0
SHADOW_DB = 6.0


@dataclass(frozen=True)
class Parenchyma:
    """The reference tissue a lesion's echogenicity and 'no posterior feature' are relative to."""

    echo_db: float
    attenuation: float


@dataclass
class LesionSection:
    """The lesion cut by one imaging plane: its layers (painted last) and its outline."""

    layers: list[Layer]
    outline: Shape  # the lesion body (for placement and for measuring)
    base: StarShape  # the underlying smooth contour (internal features are placed in it)
    plane: str
    label: int = LESION_LABEL
    # What `build_section` knew (None for hand-made sections): the region the calcifications are
    # placed in, and the reference tissue. Domain randomisation redraws within them.
    solid_region: StarShape | None = None
    parenchyma: Parenchyma | None = None

    def bounds(self) -> tuple[float, float, float, float]:
        """Conservative bounding box of every layer (cheap)."""
        bs = np.array([layer.shape.bounds() for layer in self.layers], dtype=np.float64)
        return (bs[:, 0].min(), bs[:, 1].min(), bs[:, 2].max(), bs[:, 3].max())

    def extent(self, step_mm: float = 0.25) -> tuple[float, float, float, float]:
        """Tight bounding box of the labelled lesion (to within `step_mm`), for fitting it in the fan."""
        return section_extent(self, step_mm)

    def shift(self, dx: float, dz: float) -> LesionSection:
        """The same section moved by (dx, dz) mm (a probe moved along the skin)."""
        return LesionSection(
            [Layer(moved(layer.shape, dx, dz), layer.tissue) for layer in self.layers],
            moved(self.outline, dx, dz),
            moved(self.base, dx, dz),
            self.plane,
            self.label,
            None if self.solid_region is None else moved(self.solid_region, dx, dz),  # type: ignore[arg-type]
            self.parenchyma,
        )


# --------------------------------------------------------------------------------------------- geometry


def _contour(
    spec: LesionSpec, plane: str, cx: float, cz: float, rng: np.random.Generator
) -> tuple[Shape, StarShape]:
    """The lesion body in one plane: (outline shape used for painting, smooth base contour)."""
    aw, al, ah = spec.semi_axes_mm
    rx = aw if plane == "transverse" else al
    harmonics: list[tuple[int, float, float]] = []
    spikes: list[tuple[float, float, float]] = []
    edge = 0.15
    if spec.contour == "lobulated":
        for k in rng.choice([3, 4, 5], size=2, replace=False):
            harmonics.append((int(k), float(rng.uniform(0.07, 0.12)), float(rng.uniform(0, 2 * np.pi))))
    elif spec.contour == "irregular":
        for k in rng.choice([2, 3, 4, 5, 6], size=3, replace=False):
            harmonics.append((int(k), float(rng.uniform(0.05, 0.1)), float(rng.uniform(0, 2 * np.pi))))
    margin = spec.margins[0]
    if margin == "microlobulated":
        harmonics.append(
            (int(rng.integers(11, 17)), float(rng.uniform(0.04, 0.06)), float(rng.uniform(0, 6.3)))
        )
    elif margin == "spiculated":
        n = int(rng.integers(9, 16))
        centers = np.sort(rng.uniform(-np.pi, np.pi, n))
        spikes = [(float(c), float(rng.uniform(0.3, 0.6)), float(rng.uniform(0.035, 0.06))) for c in centers]
    elif margin == "extrathyroidal_extension":
        # a broad bulge through the anterior capsule (local -v is anterior), plus an irregular contour
        spikes.append((-np.pi / 2 + float(rng.uniform(-0.3, 0.3)), float(rng.uniform(0.35, 0.5)), 0.45))
        if not harmonics:
            harmonics.append((3, float(rng.uniform(0.05, 0.08)), float(rng.uniform(0, 2 * np.pi))))
    elif margin == "indistinct":
        edge = float(rng.uniform(1.2, 2.2))
    elif margin == "irregular":
        harmonics.append(
            (int(rng.integers(6, 10)), float(rng.uniform(0.06, 0.1)), float(rng.uniform(0, 6.3)))
        )
    base = StarShape(
        cx,
        cz,
        rx,
        ah,
        angle_deg=spec.tilt_deg,
        harmonics=tuple(harmonics),
        spikes=tuple(spikes),
        edge_mm=edge,
    )
    if margin == "angular":
        n = int(rng.integers(6, 10))
        phi = np.sort(rng.uniform(0, 2 * np.pi, n) + np.linspace(0, 2 * np.pi, n, endpoint=False)) % (
            2 * np.pi
        )
        phi = np.sort(phi)
        pts = star_points(base, phi, 1.0) - np.array([cx, cz])
        pts = pts * rng.uniform(0.95, 1.2, size=(n, 1)) + np.array([cx, cz])
        return Polygon(pts, edge_mm=0.15), base
    return base, base


def _interior_points(
    base: StarShape, rng: np.random.Generator, n: int, max_frac: float, dot_norm: float
) -> np.ndarray:
    """n world points well inside the base contour (clear of its edge by the dot radius)."""
    phi = rng.uniform(0, 2 * np.pi, n)
    rmax = np.clip(max_frac * np.minimum(base.radius(phi), 1.0) - dot_norm, 0.05, None)
    r = rmax * np.sqrt(rng.uniform(0, 1, n))
    return star_local_to_world(base, r * np.cos(phi), r * np.sin(phi))


def build_section(
    spec: LesionSpec, plane: str, cx: float, cz: float, parenchyma: Parenchyma, clip: Shape | None = None
) -> LesionSection:
    """The lesion's shapes and tissues in `plane`, centred at (cx, cz) mm in the patient frame.

    `clip` restricts every part of the lesion to a region (a plaque to the vessel lumen and wall,
    a polyp to the gallbladder lumen).
    """
    if plane not in PLANES:
        raise ValueError(f"plane must be one of {PLANES}, got {plane!r}")
    rng = np.random.default_rng([spec.seed, PLANES.index(plane)])
    outline, base = _contour(spec, plane, cx, cz, rng)
    mean_r = 0.5 * (base.rx + base.rz)
    lab = spec.label
    solid_att = parenchyma.attenuation if np.isnan(spec.solid_attenuation) else spec.solid_attenuation
    solid = Tissue(
        "lesion_solid",
        parenchyma.echo_db + spec.solid_echo_db,
        solid_att,
        lab,
        texture_db=spec.texture_db,
        texture_scale_mm=float(rng.uniform(1.2, 2.5)),
        texture_seed=int(rng.integers(0, 2**31 - 1)),
    )
    fluid = Tissue("lesion_fluid", FLUID_DB, spec.fluid_attenuation, lab)
    bright = Tissue("septum", parenchyma.echo_db + 8.0, parenchyma.attenuation, lab)
    layers: list[Layer] = []
    solid_region: StarShape = base  # where calcifications go

    if spec.composition == "solid":
        layers.append(Layer(outline, solid))
    elif spec.composition == "cystic":
        layers.append(Layer(outline, fluid))
    elif spec.composition == "spongiform":
        layers.append(Layer(outline, solid))
        r_dot = float(np.clip(0.09 * mean_r, 0.35, 1.0))
        n = int(np.clip(0.6 * base.rx * base.rz / r_dot**2, 8, 80))
        pts = _interior_points(base, rng, n, 0.92, r_dot / mean_r)
        layers.append(Layer(Dots(pts, rng.uniform(0.7, 1.2, n) * r_dot), fluid))
    else:  # mixed cystic-solid
        if rng.random() < 0.5:
            # cystic lesion with a mural solid component
            layers.append(Layer(outline, fluid))
            th = rng.uniform(0, 2 * np.pi)
            ((mx, mz),) = star_local_to_world(
                base, np.array([0.5 * np.cos(th)]), np.array([0.5 * np.sin(th)])
            )
            solid_region = StarShape(
                float(mx),
                float(mz),
                0.6 * base.rx,
                0.6 * base.rz,
                angle_deg=base.angle_deg,
                harmonics=((3, 0.1, float(rng.uniform(0, 6.3))),),
                edge_mm=0.15,
            )
            layers.append(Layer(Intersection([solid_region, outline]), solid))
        else:
            # solid lesion with cystic spaces
            layers.append(Layer(outline, solid))
            n = int(rng.integers(2, 5))
            r_dot = rng.uniform(0.2, 0.32, n) * mean_r
            pts = _interior_points(base, rng, n, 0.85, float(r_dot.max()) / mean_r)
            layers.append(Layer(Dots(pts, r_dot), fluid))

    if spec.echogenicity == "heterogeneous":
        # patchy hypo- and hyperechoic areas over a mildly textured solid part
        for sign in (-1.0, 1.0):
            n = int(rng.integers(3, 8))
            r_p = rng.uniform(0.12, 0.25, n) * mean_r
            pts = _interior_points(solid_region, rng, n, 0.8, float(r_p.max()) / mean_r)
            patch_db = parenchyma.echo_db + spec.solid_echo_db + sign * float(rng.uniform(5.0, 8.0))
            layers.append(
                Layer(
                    Dots(pts, r_p, edge_mm=0.3 * float(r_p.mean())),
                    Tissue("lesion_patch", patch_db, solid_att, lab),
                )
            )
    fluid_body = spec.composition in ("cystic", "mixed_cystic_solid")
    if "debris" in spec.features and fluid_body:
        debris = Tissue("debris", parenchyma.echo_db + DEBRIS_DB, spec.fluid_attenuation + 0.05, lab)
        if rng.random() < 0.6:  # dependent fluid-debris level
            level = base.cz + base.rz * float(rng.uniform(0.1, 0.5))
            layers.insert(1, Layer(Intersection([outline, Band.flat(level, base.cz + 10 * base.rz)]), debris))
        else:  # floating clumps
            n = int(rng.integers(3, 8))
            r_dot = float(np.clip(0.12 * mean_r, 0.4, 2.0))
            layers.insert(1, Layer(Dots(_interior_points(base, rng, n, 0.8, r_dot / mean_r), r_dot), debris))
    if "septations" in spec.features and fluid_body:
        for _ in range(int(rng.integers(1, 4))):
            a0 = rng.uniform(0, 2 * np.pi)  # a chord across the cavity
            p = star_points(base, np.array([a0, a0 + np.pi + rng.uniform(-0.7, 0.7)]), 0.9)
            layers.append(Layer(Tube(p, float(rng.uniform(0.25, 0.4))), bright))
    if "comet_tail" in spec.features:
        # colloid crystals float in the fluid: keep the foci out of a mural solid component
        n = int(rng.integers(1, 4))
        cand = _interior_points(base, rng, 16, 0.6, 0.1)
        if solid_region is not base:
            free = solid_region.signed_distance(cand[:, 0], cand[:, 1]) > 0.5
            cand = np.concatenate([cand[free], cand[~free]])
        pts = cand[:n]
        layers.append(
            Layer(
                Dots(pts, 0.3), Tissue("colloid", parenchyma.echo_db + CALC_DB, parenchyma.attenuation, lab)
            )
        )
        tail_len = float(np.clip(0.25 * base.rz, 0.8, 2.5))
        for frac, db in ((0.0, 18.0), (0.5, 12.0)):
            segs = [
                np.array([[x, z + 0.3 + frac * tail_len], [x, z + 0.3 + (frac + 0.5) * tail_len]])
                for x, z in pts
            ]
            for seg in segs:
                layers.append(
                    Layer(
                        Tube(seg, 0.2),
                        Tissue("comet_tail", parenchyma.echo_db + db, parenchyma.attenuation, lab),
                    )
                )
    calc_db = parenchyma.echo_db + CALC_DB
    if "microcalcifications" in spec.features:
        n = int(rng.integers(4, 11))
        pts = _interior_points(solid_region, rng, n, 0.75, 0.05)
        layers.append(
            Layer(Dots(pts, rng.uniform(0.25, 0.4, n)), Tissue("microcalcification", calc_db, 1.0, lab))
        )
    if "macrocalcifications" in spec.features:
        n = int(rng.integers(1, 3))
        r = float(np.clip(rng.uniform(0.18, 0.3) * mean_r, 0.8, 3.0))
        pts = _interior_points(solid_region if fluid_body else base, rng, n, 0.6, r / mean_r)
        att = float(rng.uniform(*CALC_ATTENUATION))
        layers.append(Layer(Dots(pts, r), Tissue("macrocalcification", calc_db, att, lab)))
    if "rim_calcifications" in spec.features:
        a0 = rng.uniform(-0.9 * np.pi, -0.7 * np.pi)
        a1 = rng.uniform(-0.3 * np.pi, -0.1 * np.pi)
        arc = star_points(base, np.linspace(a0, a1, 16), 0.93)
        att = float(rng.uniform(*CALC_ATTENUATION))
        layers.append(
            Layer(
                Tube(arc, float(np.clip(0.06 * mean_r, 0.35, 0.8))),
                Tissue("rim_calcification", calc_db, att, lab),
            )
        )
    if clip is not None:
        layers = [Layer(Intersection([layer.shape, clip]), layer.tissue) for layer in layers]
        outline = Intersection([outline, clip])
    return LesionSection(layers, outline, base, plane, lab, solid_region, parenchyma)


# --------------------------------------------------------------------------------------------- measuring


def _layer_extent(shape: Shape, step_mm: float | None) -> tuple[float, float, float, float] | None:
    """Exact extent of one shape's inside (signed distance <= 0), or None if empty.

    Closed forms where the boundary is known (star contours sampled densely along their
    parametric boundary, polygon vertices, dots, tubes); a fine grid for intersections.
    """
    if isinstance(shape, StarShape):
        pts = star_points(shape, np.linspace(-np.pi, np.pi, 7201), 1.0)
    elif isinstance(shape, Polygon):
        pts = shape.vertices
    elif isinstance(shape, Dots):
        if len(shape.centers) == 0:
            return None
        lo = (shape.centers - shape.radii[:, None]).min(axis=0)
        hi = (shape.centers + shape.radii[:, None]).max(axis=0)
        return (lo[0], lo[1], hi[0], hi[1])
    elif isinstance(shape, Tube):
        lo, hi = shape.points.min(axis=0) - shape.radius, shape.points.max(axis=0) + shape.radius
        # a capsule is a segment grown by a disc: its extremes are at the end caps
        return (lo[0], lo[1], hi[0], hi[1])
    else:
        x0, z0, x1, z1 = shape.bounds()
        span = max(x1 - x0, z1 - z0)
        step = step_mm or float(np.clip(span / 400.0, 0.02, 0.15))
        xs = np.arange(x0, x1 + step, step)
        zs = np.arange(z0, z1 + step, step)
        return _grid_extent(shape, xs, zs)
    return (float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max()))


def _first_hit(shape: Shape, xs: np.ndarray, zs: np.ndarray, by_column: bool, reverse: bool) -> int | None:
    """Index of the first column (or row) of the grid xs x zs, scanning from one side, that holds a
    point inside `shape`; evaluates the grid in strips so only the empty margin and one strip are
    computed, not the whole grid."""
    n = len(xs) if by_column else len(zs)
    chunk = max(8, n // 16)
    order = np.arange(n)[::-1] if reverse else np.arange(n)
    for start in range(0, n, chunk):
        sel = order[start : start + chunk]
        if by_column:
            hit = shape.inside(xs[sel][None, :], zs[:, None]).any(axis=0)
        else:
            hit = shape.inside(xs[None, :], zs[sel][:, None]).any(axis=1)
        k = np.flatnonzero(hit)
        if k.size:
            return int(sel[k[0]])
    return None


def _grid_extent(shape: Shape, xs: np.ndarray, zs: np.ndarray) -> tuple[float, float, float, float] | None:
    """Extent of the grid points inside `shape`: the same answer as evaluating the whole grid
    (first/last column and row with a point inside), scanning inwards from each side."""
    c0 = _first_hit(shape, xs, zs, by_column=True, reverse=False)
    if c0 is None:
        return None
    c1 = _first_hit(shape, xs, zs, by_column=True, reverse=True)
    cols = xs[c0 : c1 + 1]  # rows only need the columns that hold the shape
    r0 = _first_hit(shape, cols, zs, by_column=False, reverse=False)
    r1 = _first_hit(shape, cols, zs, by_column=False, reverse=True)
    return (float(xs[c0]), float(zs[r0]), float(xs[c1]), float(zs[r1]))


ExtentCache = dict[tuple[int, float | None], tuple[Shape, tuple[float, float, float, float] | None]]
_CLOSED_FORM = (StarShape, Polygon, Dots, Tube)  # `_layer_extent` needs no grid step for these


def _cached_layer_extent(
    shape: Shape, step_mm: float | None, cache: ExtentCache | None
) -> tuple[float, float, float, float] | None:
    if cache is None:
        return _layer_extent(shape, step_mm)
    key = (id(shape), None if isinstance(shape, _CLOSED_FORM) else step_mm)
    hit = cache.get(key)
    if hit is None:
        hit = cache[key] = (shape, _layer_extent(shape, step_mm))  # holds the shape: its id stays unique
    return hit[1]


def section_extent(
    section: LesionSection, step_mm: float | None = None, cache: ExtentCache | None = None
) -> tuple[float, float, float, float]:
    """(xmin, zmin, xmax, zmax) of everything the section labels, from its exact geometry.

    The label map marks pixels whose centre lies inside a layer, so this is what calipers on the
    mask measure (to within one pixel). `step_mm` is the grid step for shapes without a closed
    form (clipped lesions). `cache` reuses the extents of shape objects already measured (at
    this step where it matters), for callers that measure variants of one section sharing shapes.
    """
    ext = [
        e
        for e in (_cached_layer_extent(layer.shape, step_mm, cache) for layer in section.layers)
        if e is not None
    ]
    if not ext:
        raise ValueError("lesion section is empty")
    arr = np.array(ext, dtype=np.float64)
    return float(arr[:, 0].min()), float(arr[:, 1].min()), float(arr[:, 2].max()), float(arr[:, 3].max())


def attenuation_at(layers: list[Layer], x: np.ndarray, z: np.ndarray, att: np.ndarray) -> np.ndarray:
    """Paint the attenuation of `layers` over `att` at points (x, z), blending soft edges exactly
    as `TissueModel.properties` does; only attenuation (no textures), so it is cheap."""
    for layer in layers:
        x0, z0, x1, z1 = layer.shape.bounds()
        idx = np.flatnonzero((x >= x0) & (x <= x1) & (z >= z0) & (z <= z1))
        if idx.size == 0:
            continue
        w = layer.shape.weight(x[idx], z[idx])
        att[idx] = (1.0 - w) * att[idx] + w * layer.tissue.attenuation_db_cm_mhz
    return att


@dataclass
class PosteriorProfile:
    """Round-trip attenuation the lesion adds behind itself, per beam across it."""

    offsets_mm: np.ndarray  # lateral offset of each ray from the lesion centre
    delta_db: np.ndarray  # extra round-trip attenuation past the lesion (negative: enhancement)
    hits: np.ndarray  # whether the ray crosses the lesion
    direction: tuple[float, float]  # unit beam direction at the lesion
    labels: list[str]


def beam_direction(params, x: float, z: float) -> tuple[float, float]:
    """Unit vector of the beam through world point (x, z) (vertical for linear arrays)."""
    if params.probe == "linear":
        return (0.0, 1.0)
    r0 = float(params.radius_mm or 0.0) if params.probe == "curvilinear" else 0.0
    v = np.array([x, z + r0])
    v = v / np.linalg.norm(v)
    return (float(v[0]), float(v[1]))


def posterior_labels(
    profile: PosteriorProfile, enhancement_db: float = ENHANCEMENT_DB, shadow_db: float = SHADOW_DB
) -> list[str]:
    """The posterior features `profile` shows at the given thresholds (see `posterior_from_model`).

    Stricter thresholds than the defaults ask whether a feature is *clearly* present (domain
    randomisation keeps a clearly present feature clearly present).
    """
    hits, delta = profile.hits, profile.delta_db
    ray_step = profile.offsets_mm[1] - profile.offsets_mm[0]
    n_hit = max(int(hits.sum()), 1)
    enh = hits & (delta <= enhancement_db)
    sha = hits & (delta >= shadow_db)
    labels = []
    if enh.sum() >= max(0.3 * n_hit, 1.5 / ray_step):
        labels.append("enhancement")
    if sha.sum() * ray_step >= 1.0:
        labels.append("shadowing")
    return labels


def posterior_from_model(
    with_lesion: TissueModel,
    section: LesionSection,
    params,
    n_rays: int = 60,
    n_steps: int = 100,
    extent_cache: ExtentCache | None = None,
) -> PosteriorProfile:
    """Call posterior features from the attenuation the lesion adds along this image's beams.

    For `n_rays` rays parallel to the beam through the lesion, integrates (attenuation with the
    lesion - attenuation without it) across the lesion's depth, doubled for the round trip and
    scaled by the centre frequency. The model is evaluated only inside the lesion layers' bounding
    boxes (elsewhere the difference is exactly 0); 60 x 100 samples give the same labels as
    100 x 160 on 2206 of 2207 planned lesion images of the six regions (the one change is a
    borderline ray count) at less than half the cost. Enhancement when at least 30% of the rays that cross the
    lesion (and >= 1.5 mm of them) gain more than 3 dB; shadowing when rays over >= 1 mm lose
    more than 6 dB; both = "combined". `extent_cache`: see `section_extent` (same result, less work).
    """
    lesion_shapes = {id(layer.shape) for layer in section.layers}
    others = [layer for layer in with_lesion.layers if id(layer.shape) not in lesion_shapes]
    x0, z0, x1, z1 = section_extent(section, 0.2, extent_cache)
    cx, cz = 0.5 * (x0 + x1), 0.5 * (z0 + z1)
    half = 0.5 * np.hypot(x1 - x0, z1 - z0) + 0.5
    dx, dz = beam_direction(params, cx, cz)
    px, pz = dz, -dx  # perpendicular
    offsets = np.linspace(-half, half, n_rays)
    s = np.linspace(-half, half, n_steps)
    ds = s[1] - s[0]
    ox = (cx + offsets[:, None] * px + s[None, :] * dx).ravel()
    oz = (cz + offsets[:, None] * pz + s[None, :] * dz).ravel()
    # The lesion changes the attenuation only inside its layers' bounding boxes: evaluate the
    # model there alone (the square above spans the lesion's diagonal in every direction, so most
    # of it lies outside). Outside, "with" equals "without" exactly, so the result is unchanged.
    sel = np.zeros(ox.shape, dtype=bool)
    for layer in section.layers:
        bx0, bz0, bx1, bz1 = layer.shape.bounds()
        sel |= (ox >= bx0) & (ox <= bx1) & (oz >= bz0) & (oz <= bz1)
    idx = np.flatnonzero(sel)
    sx, sz = ox[idx], oz[idx]
    base = np.full(idx.shape, with_lesion.background.attenuation_db_cm_mhz)
    a_without = attenuation_at(others, sx, sz, base)
    a_with = attenuation_at(section.layers, sx, sz, a_without.copy())
    diff = np.zeros(ox.shape)
    diff[idx] = a_with - a_without
    delta = 2.0 * params.center_freq_mhz * diff.reshape(n_rays, n_steps).sum(axis=1) * ds / 10.0
    inside = np.zeros(ox.shape, dtype=bool)
    inside_sel = np.zeros(idx.shape, dtype=bool)
    for layer in section.layers:
        inside_sel |= layer.shape.inside(sx, sz)
    inside[idx] = inside_sel
    hits = inside.reshape(n_rays, n_steps).any(axis=1)
    profile = PosteriorProfile(offsets, delta, hits, (dx, dz), [])
    profile.labels = posterior_labels(profile)
    return profile
