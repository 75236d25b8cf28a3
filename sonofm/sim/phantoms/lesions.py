"""The lesion library: catalogues of lesion kinds, consistent attribute sampling, report tags.

Shared by every non-cardiac region. How to use it (a new region in four steps):

1. Describe the organ's lesions as data: a table in lesion_catalogues.toml (malignancy prevalence,
   the diagnosis a normal report denies) with one entry per entity (e.g. "fibroadenoma") giving the
   lexicon-following conditional distribution of every attribute ({tag = weight});
   `lesion_catalogue(organ)` reads it as an `OrganCatalogue` of `LesionKind`s.
2. `spec = sample_lesion(rng, catalogue)` draws the latent `malignant` flag first, then a kind of
   that malignancy, then attributes, then makes them consistent (a cyst is anechoic and enhances,
   calcifications shadow, ...) and draws 3-D size, orientation and the solid-part attenuation
   that realises the wanted posterior feature.
3. Per image, `section = build_section(spec, plane, cx, cz, parenchyma)` (`lesion_section`) gives
   the lesion's shapes and tissues in that plane ("transverse" shows width x height,
   "longitudinal" length x height); add `section.layers` to the region's `TissueModel` last.
4. `image_tags(spec, width_mm, height_mm, posterior)` returns the tags to report for THIS image:
   the shape's orientation and the posterior features are measured (`lesion_section`: extents
   from the exact geometry, posterior from the attenuation integrated along the beams of this
   image's probe at its centre frequency), never assumed, so labels agree with what the physics
   renders.

Posterior features come from attenuation only (no painting): fluid 0.002-0.05 dB/cm/MHz gives
enhancement, solid parts >= 2.5 dB/cm/MHz or macro/rim calcifications (10-20 dB/cm/MHz) give
shadowing, microcalcifications are too small to shadow (as in real scans). Comet-tail artefacts
(reverberation) are outside the convolution model, so they are drawn as a short decaying bright
streak below a colloid focus.
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sonofm.reports.schema import Finding, Status

Dist = Mapping[str, float]

LESION_LABEL = 1
PLAQUE_LABEL = 10

CONTOURS = ("oval", "round", "irregular", "lobulated")
ORIENTATIONS = ("parallel", "taller", "round")
COMPOSITIONS = ("solid", "cystic", "mixed_cystic_solid", "spongiform")
FEATURES = (
    "septations",
    "debris",
    "microcalcifications",
    "macrocalcifications",
    "rim_calcifications",
    "comet_tail",
)
POSTERIOR_TARGETS = ("none", "enhancement", "shadowing", "combined")
FLUID_COMPOSITIONS = ("cystic", "mixed_cystic_solid", "spongiform")
CALCIFICATIONS = ("microcalcifications", "macrocalcifications", "rim_calcifications")

# Echogenicity of the solid part relative to the reference tissue (dB ranges). Fluid is far below
# ANECHOIC_DB so it carries no scatterers at all.
ECHO_DB: dict[str, tuple[float, float]] = {
    "very_hypoechoic": (-20.0, -15.0),
    "hypoechoic": (-11.0, -6.0),
    "isoechoic": (-1.0, 1.0),
    "hyperechoic": (5.0, 9.0),
    "heterogeneous": (-4.0, 2.0),
}
FLUID_DB = -80.0
FLUID_ATTENUATION = (0.002, 0.05)  # dB/cm/MHz: water-like, gives posterior enhancement
SHADOW_ATTENUATION = (1.5, 3.5)  # dB/cm/MHz for a shadowing solid lesion (desmoplastic tumour)
ENHANCE_ATTENUATION = (0.05, 0.15)  # dB/cm/MHz for a solid lesion with enhancement (cellular tumour)
CALC_ATTENUATION = (12.0, 20.0)  # macro/rim calcifications: near-total reflection and absorption
CALC_DB = 20.0  # calcification echogenicity above the reference tissue
DEBRIS_DB = -22.0  # low-level echoes in fluid, relative to the reference tissue


@dataclass(frozen=True, kw_only=True)
class LesionKind:
    """One lesion entity of one organ and its attribute distributions (weights, need not sum to 1).

    Keyword-only, so every catalogue entry names each property: `name` (the entity, e.g.
    "fibroadenoma"), `diagnosis` (the report's diagnosis tag), `malignant` (None: does not apply),
    `weight` (relative frequency among the organ's kinds of the same malignancy) and the rest.
    `features` are independent probabilities of the optional internal features (FEATURES);
    `posterior` is the *wanted* posterior feature of the solid part (fluid always enhances and
    calcifications always shadow; the reported label is measured, see `posterior_from_model`).
    `size_mm` is the range of the longest diameter. `orientation`: "parallel" (wider than tall),
    "taller" (taller than wide) or "round" (all axes equal).
    """

    name: str
    diagnosis: str
    malignant: bool | None
    weight: float
    size_mm: tuple[float, float]
    contour: Dist
    margin: Dist
    echogenicity: Dist
    composition: Dist
    posterior: Dist
    vascularity: Dist
    features: Dist = field(default_factory=dict)
    orientation: Dist = field(default_factory=lambda: {"parallel": 1.0})
    label: int = LESION_LABEL


@dataclass(frozen=True)
class OrganCatalogue:
    """The lesions one organ can have. `malignant_prevalence` None: malignancy does not apply."""

    organ: str
    kinds: tuple[LesionKind, ...]
    malignant_prevalence: float | None = None
    orientation_tags: bool = False  # report taller-than-wide / wider-than-tall (BI-RADS, TI-RADS)
    normal_lesion_tag: str = "nodule"  # the diagnosis a normal report explicitly denies


CATALOGUE_FILE = Path(__file__).with_name("lesion_catalogues.toml")
LABELS = {"lesion": LESION_LABEL, "plaque": PLAQUE_LABEL}  # the catalogue file's `label` names


@functools.cache
def _catalogue_tables() -> dict[str, dict]:
    with CATALOGUE_FILE.open("rb") as f:
        return tomllib.load(f)


def _lesion_kind(organ: str, entry: Mapping) -> LesionKind:
    fields_ = dict(entry)
    if fields_.get("malignant") == "n/a":
        fields_["malignant"] = None
    fields_["size_mm"] = tuple(fields_["size_mm"])
    if "label" in fields_:
        fields_["label"] = LABELS[fields_["label"]]
    try:
        return LesionKind(**fields_)
    except TypeError as e:
        raise ValueError(f"{CATALOGUE_FILE.name}: {organ} kind {entry.get('name')!r}: {e}") from None


def lesion_catalogue(organ: str) -> OrganCatalogue:
    """The `OrganCatalogue` of `organ` as written in lesion_catalogues.toml (the data of every kind)."""
    tables = _catalogue_tables()
    if organ not in tables:
        raise KeyError(f"no lesion catalogue for {organ!r} in {CATALOGUE_FILE.name}; have: {sorted(tables)}")
    table = dict(tables[organ])
    kinds = tuple(_lesion_kind(organ, k) for k in table.pop("kinds"))
    return OrganCatalogue(organ=organ, kinds=kinds, **table)


@dataclass
class LesionSpec:
    """One patient's lesion, fixed across all of that patient's images."""

    organ: str
    kind: str
    diagnosis: str
    malignant: bool | None
    contour: str
    margins: list[str]
    echogenicity: str
    composition: str
    features: list[str]
    posterior_target: str
    vascularity: str
    semi_axes_mm: tuple[float, float, float]  # (transverse, longitudinal, antero-posterior)
    solid_echo_db: float  # relative to the reference tissue
    solid_attenuation: float  # dB/cm/MHz of the solid part
    fluid_attenuation: float
    texture_db: float
    seed: int
    label: int = LESION_LABEL
    tilt_deg: float = 0.0
    orientation_tags: bool = False

    @property
    def max_radius_mm(self) -> float:
        extra = 1.5 if "spiculated" in self.margins or "extrathyroidal_extension" in self.margins else 1.25
        return extra * max(self.semi_axes_mm)

    def internal_tags(self) -> list[str]:
        return [self.composition, *self.features]

    def nominal_attributes(self) -> dict[str, list[str]]:
        """The lesion's tags from its 3-D geometry and *wanted* posterior feature (for sampling
        statistics and risk scores); per-image reports use `image_tags`, which measures."""
        aw, _, ah = self.semi_axes_mm
        shape = [self.contour]
        if self.orientation_tags and self.contour != "round":
            o = orientation_tag(2 * aw, 2 * ah)
            shape += [o] if o else []
        post = {"none": [], "combined": ["enhancement", "shadowing"]}.get(
            self.posterior_target, [self.posterior_target]
        )
        return {
            "diagnosis": [self.diagnosis],
            "shape": shape,
            "margin": list(self.margins),
            "echogenicity": [self.echogenicity],
            "internal": self.internal_tags(),
            "posterior": post,
            "vascularity": [self.vascularity],
        }


# --------------------------------------------------------------------------------------------- sampling


def choose(rng: np.random.Generator, dist: Dist) -> str:
    """Draw one key of `dist` with probability proportional to its weight."""
    keys = list(dist)
    w = np.asarray([dist[k] for k in keys], dtype=np.float64)
    if len(keys) == 0 or w.sum() <= 0:
        raise ValueError(f"cannot sample from an empty distribution {dict(dist)!r}")
    return keys[int(rng.choice(len(keys), p=w / w.sum()))]


def sample_kind(
    rng: np.random.Generator, catalogue: OrganCatalogue, malignant: bool | None = None
) -> LesionKind:
    """The latent malignancy first (organ prevalence), then an entity of that malignancy."""
    kinds = catalogue.kinds
    if catalogue.malignant_prevalence is not None:
        if malignant is None:
            malignant = bool(rng.random() < catalogue.malignant_prevalence)
        matching = [k for k in kinds if k.malignant is malignant]
        kinds = tuple(matching) or kinds
    w = np.asarray([k.weight for k in kinds], dtype=np.float64)
    return kinds[int(rng.choice(len(kinds), p=w / w.sum()))]


def sample_lesion(
    rng: np.random.Generator,
    catalogue: OrganCatalogue,
    *,
    malignant: bool | None = None,
    kind: str | None = None,
) -> LesionSpec:
    """Draw one lesion of `catalogue`'s organ with consistent attributes and geometry."""
    if kind is not None:
        by_name = {k.name: k for k in catalogue.kinds}
        if kind not in by_name:
            raise ValueError(f"unknown lesion kind {kind!r} for {catalogue.organ}; valid: {sorted(by_name)}")
        lk = by_name[kind]
    else:
        lk = sample_kind(rng, catalogue, malignant)
    contour = choose(rng, lk.contour)
    margin = choose(rng, lk.margin)
    echo = choose(rng, lk.echogenicity)
    composition = choose(rng, lk.composition)
    posterior = choose(rng, lk.posterior)
    vascularity = choose(rng, lk.vascularity)
    orientation = choose(rng, lk.orientation)
    features = [f for f in FEATURES if rng.random() < lk.features.get(f, 0.0)]
    size = float(rng.uniform(*lk.size_mm))
    u = rng.uniform(size=8)
    seed = int(rng.integers(0, 2**31 - 1))

    # ---- make the attributes consistent with each other (lexicon rules) ----
    if composition == "cystic":
        # fluid is anechoic; debris (internal echoes) makes the content hypoechoic, and a report
        # saying "anechoic ... with debris" contradicts itself (issue #22)
        echo = "hypoechoic" if "debris" in features else "anechoic"
        features = [f for f in features if f != "microcalcifications"]
        if vascularity in ("internal", "hypervascular"):
            vascularity = "avascular"
    elif echo == "anechoic":
        echo = "hypoechoic"
    if composition == "spongiform":
        echo = "isoechoic"
        features = [f for f in features if f == "comet_tail"]
    if composition == "solid":
        features = [f for f in features if f not in ("septations", "debris", "comet_tail")]
    if "rim_calcifications" in features:
        features = [f for f in features if f != "macrocalcifications"]
    if contour == "round":
        orientation = "round"
    elif orientation == "round":
        orientation = "parallel"
    if (
        posterior == "combined"
        and composition != "spongiform"
        and not any(f in features for f in ("macrocalcifications", "rim_calcifications"))
    ):
        features.append("macrocalcifications")  # the shadowing half of "combined"
    shadows_by_calc = any(f in features for f in ("macrocalcifications", "rim_calcifications"))
    if composition in FLUID_COMPOSITIONS:
        posterior = "combined" if shadows_by_calc else "enhancement"
    elif shadows_by_calc and posterior in ("none", "enhancement"):
        posterior = "shadowing" if posterior == "none" else "combined"

    # ---- attenuation of the solid part realises the wanted posterior feature ----
    if posterior == "shadowing" and not shadows_by_calc:
        att = float(np.interp(u[0], [0, 1], SHADOW_ATTENUATION))
    elif posterior in ("enhancement", "combined"):
        att = float(np.interp(u[0], [0, 1], ENHANCE_ATTENUATION))
    else:
        att = float("nan")  # "same as the surrounding tissue", resolved in build_section
    lo, hi = ECHO_DB.get(echo if echo != "anechoic" else "isoechoic", (0.0, 0.0))
    solid_db = float(lo + (hi - lo) * u[1])
    texture = float(2.5 + 1.5 * u[2]) if echo == "heterogeneous" else 0.0

    # ---- 3-D size: (transverse, longitudinal, antero-posterior) semi-axes ----
    a = size / 2.0
    if orientation == "round":
        axes = (a * (0.97 + 0.06 * u[3]), a * (0.97 + 0.06 * u[4]), a * (0.97 + 0.06 * u[5]))
    elif orientation == "taller":
        ah = a
        axes = (ah / (1.2 + 0.35 * u[3]), ah / (1.15 + 0.3 * u[4]), ah)
    else:
        aw = a
        al = a * (0.75 + 0.4 * u[4])
        ratio = (1.35 if contour == "oval" else 1.2) + 0.6 * u[3]
        ah = min(aw, al) / ratio
        axes = (aw, al, ah)
    tilt = 0.0 if orientation != "parallel" else float(-12.0 + 24.0 * u[6])
    return LesionSpec(
        organ=catalogue.organ,
        kind=lk.name,
        diagnosis=lk.diagnosis,
        malignant=lk.malignant,
        contour=contour,
        margins=[margin],
        echogenicity=echo,
        composition=composition,
        features=features,
        posterior_target=posterior,
        vascularity=vascularity,
        semi_axes_mm=axes,
        solid_echo_db=solid_db,
        solid_attenuation=att,
        fluid_attenuation=float(np.interp(u[7], [0, 1], FLUID_ATTENUATION)),
        texture_db=texture,
        seed=seed,
        label=lk.label,
        tilt_deg=tilt,
        orientation_tags=catalogue.orientation_tags,
    )


# --------------------------------------------------------------------------------------------- tags


def orientation_tag(width_mm: float, height_mm: float) -> str | None:
    """TI-RADS/BI-RADS orientation from the measured extents in this plane."""
    if height_mm > 1.05 * width_mm:
        return "taller_than_wide"
    if width_mm > 1.1 * height_mm:
        return "wider_than_tall"
    return None


def image_tags(
    spec: LesionSpec, width_mm: float, height_mm: float, posterior: list[str]
) -> dict[str, list[str]]:
    """The attribute tags one image of this lesion shows (PRESENT findings), by dimension."""
    shape = [spec.contour]
    if spec.orientation_tags:
        o = orientation_tag(width_mm, height_mm)
        if o is not None and spec.contour != "round":
            shape.append(o)
    return {
        "diagnosis": [spec.diagnosis],
        "shape": shape,
        "margin": list(spec.margins),
        "echogenicity": [spec.echogenicity],
        "internal": spec.internal_tags(),
        "posterior": list(posterior),
        "vascularity": [spec.vascularity],
    }


def findings_from_tags(tags: dict[str, list[str]]) -> list[Finding]:
    """PRESENT findings for every tag plus the negatives a radiologist states explicitly.

    Negatives: no posterior features when there are none; "no internal vascularity" for an
    avascular lesion; "no calcifications" (as no microcalcifications) for a lesion with a solid
    part and no calcification.
    """
    out = [Finding(dim, t) for dim, ids in tags.items() for t in ids]
    if not tags.get("posterior"):
        out += [
            Finding("posterior", "shadowing", Status.ABSENT),
            Finding("posterior", "enhancement", Status.ABSENT),
        ]
    if tags.get("vascularity") == ["avascular"]:
        out.append(Finding("vascularity", "internal", Status.ABSENT))
    internal = tags.get("internal", [])
    if internal and internal[0] != "cystic" and not any(c in internal for c in CALCIFICATIONS):
        out.append(Finding("internal", "microcalcifications", Status.ABSENT))
    return out


def normal_findings(catalogue: OrganCatalogue) -> list[Finding]:
    """A normal study: 'normal appearance' and the explicit 'no <nodule/mass/...>'."""
    return [Finding("diagnosis", "normal"), Finding("diagnosis", catalogue.normal_lesion_tag, Status.ABSENT)]
