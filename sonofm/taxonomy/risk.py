"""Lesion risk stratification from taxonomy attributes: ACR TI-RADS, BI-RADS-style, O-RADS-style.

``attributes`` everywhere is the manifest/report form: {dimension: [tag ids]} (dimensions from
``sonofm.taxonomy.DIMENSIONS``; missing dimensions mean "not described").

ACR TI-RADS follows Tessler et al., J Am Coll Radiol 2017;14:587-595 (white paper) exactly:
composition, echogenicity, shape and margin contribute the points of one (the highest-scoring
described) feature each; echogenic foci points are additive. Choices the chart leaves open:
- Spongiform: the chart says "do not add further points for other categories", so a spongiform
  nodule scores 0 in total (TR1) whatever else is listed.
- Not described: composition 0, echogenicity 1 (the chart assigns 1 point when echogenicity
  "cannot be determined"), shape 0, margin 0 (the chart: 0 "if margin cannot be determined"),
  foci 0. Each such category is named in ``TiradsResult.undetermined``.
- Heterogeneous echogenicity is not a TI-RADS term: the lexicon scores the predominant
  echogenicity, so with another echogenicity tag listed that one decides (the higher wins);
  heterogeneous alone means the predominant one is unknown and scores 1 point, as the chart
  assigns when echogenicity "cannot be determined".
- 1 point total: the chart lists TR1 = 0 and TR2 = 2 points only. A 1-point nodule is necessarily
  non-solid (composition 0) with one minor feature (isoechoic or a macrocalcification), the
  profile of the benign TR1 group, so sonofm maps 1 -> TR1. TR1 and TR2 share the same
  management (no FNA, no follow-up), so the choice never changes a recommendation.

The BI-RADS assessment is a documented heuristic (BI-RADS has no points system), see ``birads``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sonofm.taxonomy.attributes import validate_attributes

Attributes = Mapping[str, Sequence[str]]

TIRADS_LEVELS: tuple[str, ...] = ("TR1", "TR2", "TR3", "TR4", "TR5")
TIRADS_SOURCE = "Tessler et al., J Am Coll Radiol 2017;14:587-595 (ACR TI-RADS white paper)"

# Points per tag, by TI-RADS category -> (dimension, {tag id: points}). (Tessler 2017, Fig. 1.)
_COMPOSITION = ("internal", {"cystic": 0, "spongiform": 0, "mixed_cystic_solid": 1, "solid": 2})
_ECHOGENICITY = (
    "echogenicity",
    {
        "anechoic": 0,
        "hyperechoic": 1,
        "isoechoic": 1,
        "hypoechoic": 2,
        "heterogeneous": 1,
        "very_hypoechoic": 3,
    },
)
_SHAPE = ("shape", {"wider_than_tall": 0, "taller_than_wide": 3})
# BI-RADS "not circumscribed" margins are irregular in TI-RADS terms (jagged, spiculated, angled).
_MARGIN = (
    "margin",
    {
        "circumscribed": 0,
        "indistinct": 0,
        "irregular": 2,
        "angular": 2,
        "microlobulated": 2,
        "spiculated": 2,
        "extrathyroidal_extension": 3,
    },
)
_FOCI = (
    "internal",
    {"comet_tail": 0, "macrocalcifications": 1, "rim_calcifications": 2, "microcalcifications": 3},
)
# Default points when a category is not described (see module docstring).
_UNDETERMINED_POINTS = {"composition": 0, "echogenicity": 1, "shape": 0, "margin": 0, "echogenic_foci": 0}


@dataclass(frozen=True)
class TiradsResult:
    """ACR TI-RADS outcome: total points, level and the points of each of the 5 categories."""

    points: int
    level: str
    breakdown: dict[str, int]
    undetermined: tuple[str, ...] = ()
    source: str = TIRADS_SOURCE


def tirads_level(points: int) -> str:
    """Level for a point total: 0-1 -> TR1, 2 -> TR2, 3 -> TR3, 4-6 -> TR4, >= 7 -> TR5."""
    if points < 0:
        raise ValueError(f"TI-RADS points must be >= 0, got {points}")
    if points <= 1:
        return "TR1"
    if points == 2:
        return "TR2"
    if points == 3:
        return "TR3"
    if points <= 6:
        return "TR4"
    return "TR5"


def _choose_one(attributes: Attributes, category: tuple[str, dict[str, int]]) -> int | None:
    dim, table = category
    pts = [table[t] for t in attributes.get(dim, ()) if t in table]
    return max(pts) if pts else None


def tirads(attributes: Attributes) -> TiradsResult:
    """ACR TI-RADS points and level of a thyroid nodule described by taxonomy attributes."""
    validate_attributes(dict(attributes), where="tirads attributes")
    internal = set(attributes.get("internal", ()))
    if "spongiform" in internal:  # chart: "do not add further points for other categories"
        return TiradsResult(0, "TR1", dict.fromkeys(_UNDETERMINED_POINTS, 0))
    breakdown: dict[str, int] = {}
    undetermined: list[str] = []
    for name, cat in (
        ("composition", _COMPOSITION),
        ("echogenicity", _ECHOGENICITY),
        ("shape", _SHAPE),
        ("margin", _MARGIN),
    ):
        p = _choose_one(attributes, cat)
        if p is None:
            undetermined.append(name)
            p = _UNDETERMINED_POINTS[name]
        breakdown[name] = p
    foci = [pts for t, pts in _FOCI[1].items() if t in internal]
    breakdown["echogenic_foci"] = sum(foci)  # additive (white paper: "choose all that apply")
    total = sum(breakdown.values())
    return TiradsResult(total, tirads_level(total), breakdown, tuple(undetermined))


@dataclass(frozen=True)
class TiradsRecommendation:
    """What ACR TI-RADS recommends for one nodule: "fna", "follow_up" or "none"."""

    action: str
    level: str
    max_diameter_mm: float
    fna_threshold_mm: float | None
    follow_up_threshold_mm: float | None
    follow_up_years: tuple[int, ...]
    text: str


# (FNA if >=, follow-up if >=, follow-up schedule in years) per level (Tessler 2017, Fig. 1 and text).
_TIRADS_SIZE = {
    "TR1": (None, None, ()),
    "TR2": (None, None, ()),
    "TR3": (25.0, 15.0, (1, 3, 5)),
    "TR4": (15.0, 10.0, (1, 2, 3, 5)),
    "TR5": (10.0, 5.0, (1, 2, 3, 4, 5)),
}


def tirads_recommendation(level: str, max_diameter_mm: float) -> TiradsRecommendation:
    """FNA / follow-up / nothing for a TI-RADS level and the nodule's maximum diameter (mm)."""
    if level not in _TIRADS_SIZE:
        raise ValueError(f"TI-RADS level: expected one of {', '.join(TIRADS_LEVELS)}, got {level!r}")
    if not max_diameter_mm >= 0:
        raise ValueError(f"max_diameter_mm: expected a non-negative size in mm, got {max_diameter_mm!r}")
    fna, follow, years = _TIRADS_SIZE[level]
    if fna is not None and max_diameter_mm >= fna:
        action, text = "fna", f"{level}: FNA recommended (nodule >= {fna / 10:g} cm)."
    elif follow is not None and max_diameter_mm >= follow:
        sched = ", ".join(str(y) for y in years)
        action, text = (
            "follow_up",
            f"{level}: ultrasound follow-up at {sched} years (nodule >= {follow / 10:g} cm).",
        )
    else:
        action = "none"
        text = (
            f"{level}: no FNA or follow-up needed."
            if fna is None
            else f"{level}: below the follow-up size ({follow / 10:g} cm); no FNA or follow-up needed."
        )
    return TiradsRecommendation(
        action, level, float(max_diameter_mm), fna, follow, years if action == "follow_up" else (), text
    )


# --------------------------------------------------------------------------------------- BI-RADS
BIRADS_CATEGORIES: tuple[str, ...] = ("1", "2", "3", "4A", "4B", "4C", "5")
# Likelihood of malignancy per category (ACR BI-RADS Atlas 5th ed., assessment categories).
BIRADS_LIKELIHOOD: dict[str, tuple[float, float]] = {
    "1": (0.0, 0.0),
    "2": (0.0, 0.0),
    "3": (0.0, 0.02),
    "4A": (0.02, 0.10),
    "4B": (0.10, 0.50),
    "4C": (0.50, 0.95),
    "5": (0.95, 1.0),
}

# Suspicion weights of the heuristic. Larger = stronger predictor of malignancy in the BI-RADS
# ultrasound literature (Stavros et al., Radiology 1995; Hong et al., AJR 2005): spiculated margin
# and irregular shape strongest, then non-parallel orientation, angular/microlobulated margins,
# microcalcifications, posterior shadowing; hypoechoic/heterogeneous echo pattern and internal
# vascularity are weak, supporting features.
BIRADS_WEIGHTS: dict[tuple[str, str], float] = {
    ("margin", "spiculated"): 3.0,
    ("shape", "irregular"): 2.0,
    ("shape", "taller_than_wide"): 2.0,
    ("margin", "angular"): 2.0,
    ("margin", "microlobulated"): 2.0,
    ("margin", "irregular"): 2.0,
    ("margin", "extrathyroidal_extension"): 3.0,
    ("internal", "microcalcifications"): 2.0,
    ("margin", "indistinct"): 1.5,
    ("posterior", "shadowing"): 1.5,
    ("internal", "mixed_cystic_solid"): 1.0,
    ("echogenicity", "very_hypoechoic"): 1.0,
    ("echogenicity", "hypoechoic"): 0.5,
    ("echogenicity", "heterogeneous"): 0.5,
    ("shape", "round"): 0.5,
    ("shape", "lobulated"): 0.5,
    ("vascularity", "internal"): 0.5,
    ("vascularity", "hypervascular"): 1.0,
}
# Score -> category cut-offs (lower bounds) for solid or complex masses.
_BIRADS_CUTS = (("5", 7.0), ("4C", 5.0), ("4B", 3.0), ("4A", 1.0))


@dataclass(frozen=True)
class BiradsResult:
    """BI-RADS-style assessment: category, whether it is suspicious (4A or higher), and why."""

    category: str
    suspicious: bool
    reasons: tuple[str, ...]
    score: float = 0.0
    likelihood: tuple[float, float] = field(default=(0.0, 0.0))

    @property
    def malignant(self) -> bool:
        """Binary benign/malignant label: suspicious categories (4A-5) count as malignant."""
        return self.suspicious


def birads(attributes: Attributes) -> BiradsResult:
    """BI-RADS-style category of a breast lesion from its attributes (a heuristic, see below).

    BI-RADS has no points system; this encodes the Atlas's descriptor semantics:
    1. No lesion (diagnosis "normal", no lesion descriptors) -> "1".
    2. Simple cyst (cystic content, anechoic or not described, no solid/mixed component, no
       debris, no septations, margin circumscribed or not described) -> "2".
    3. Complicated cyst (cystic with debris and/or thin septations, circumscribed, no suspicious
       feature) -> "3".
    4. Otherwise each present suspicious feature adds its ``BIRADS_WEIGHTS`` weight: score < 1
       (e.g. an oval, circumscribed, parallel, hypoechoic solid mass: 0.5) -> "3"; [1, 3) -> "4A";
       [3, 5) -> "4B"; [5, 7) -> "4C"; >= 7 -> "5". Any not-circumscribed margin forces >= "4A".
    """
    validate_attributes(dict(attributes), where="birads attributes")
    present = {(d, t) for d, ts in attributes.items() for t in ts}
    internal = set(attributes.get("internal", ()))
    echo = set(attributes.get("echogenicity", ()))
    margins = set(attributes.get("margin", ()))
    diagnosis = set(attributes.get("diagnosis", ()))
    lesion_dims = ("shape", "margin", "echogenicity", "internal", "posterior", "vascularity")
    if not any(attributes.get(d) for d in lesion_dims) and (not diagnosis or diagnosis <= {"normal"}):
        return BiradsResult("1", False, ("no lesion described",), 0.0, BIRADS_LIKELIHOOD["1"])

    score = 0.0
    reasons: list[str] = []
    for key, w in BIRADS_WEIGHTS.items():
        if key in present:
            score += w
            reasons.append(f"{key[1].replace('_', ' ')} {key[0]} (+{w:g})")
    not_circumscribed = bool(margins - {"circumscribed"})
    solid_part = bool(internal & {"solid", "mixed_cystic_solid"})
    is_cystic = "cystic" in internal or "cyst" in diagnosis
    if is_cystic and not solid_part and score == 0 and not not_circumscribed:
        if echo <= {"anechoic"} and not internal & {"debris", "septations"}:
            return BiradsResult("2", False, ("simple cyst",), 0.0, BIRADS_LIKELIHOOD["2"])
        return BiradsResult("3", False, ("complicated cyst",), 0.0, BIRADS_LIKELIHOOD["3"])

    category = "3"
    for cat, cut in _BIRADS_CUTS:
        if score >= cut:
            category = cat
            break
    if category == "3" and not_circumscribed:
        category = "4A"
        reasons.append("margin not circumscribed")
    if category == "3" and not reasons:
        reasons.append("no suspicious feature described (probably benign solid mass)")
    return BiradsResult(
        category, category not in ("1", "2", "3"), tuple(reasons), score, BIRADS_LIKELIHOOD[category]
    )


# ---------------------------------------------------------------------------------------- O-RADS
ORADS_SOURCE = "Andreotti et al., Radiology 2020;294:168-185 (O-RADS US risk stratification)"
# O-RADS colour score from the vascularity tag (CS1 none, CS2 minimal, CS3 moderate, CS4 very strong).
_COLOR_SCORE = {"avascular": 1, "minimal": 2, "peripheral": 3, "internal": 3, "hypervascular": 4}


@dataclass(frozen=True)
class OradsResult:
    """O-RADS US category (2-5), the lesion type the rules used, and the colour score."""

    category: int
    lesion_type: str
    color_score: int | None
    reasons: tuple[str, ...]
    source: str = ORADS_SOURCE


def orads(attributes: Attributes, max_diameter_mm: float | None = None) -> OradsResult:
    """O-RADS US category of an adnexal lesion (simplified to the descriptors the taxonomy has).

    Lesion type from ``internal``: cystic without septations -> unilocular cyst (simple when
    anechoic and circumscribed); cystic with septations -> multilocular cyst; mixed cystic/solid
    -> cyst with solid component; solid -> solid lesion. Rules (O-RADS US v2019 table):
    - simple/unilocular smooth cyst: < 10 cm -> 2, >= 10 cm -> 3;
    - multilocular cyst, no solid part: < 10 cm, smooth, CS 1-3 -> 3; >= 10 cm or CS 4 or
      irregular inner wall -> 4;
    - cyst with solid component: unilocular -> 4; multilocular: CS 1-2 -> 4, CS 3-4 -> 5;
    - solid: irregular outline -> 5; smooth: CS 1 -> 3, CS 2-3 -> 4, CS 4 -> 5.
    Unknown colour score counts as CS 1; unknown size as < 10 cm.
    """
    validate_attributes(dict(attributes), where="orads attributes")
    internal = set(attributes.get("internal", ()))
    vasc = [_COLOR_SCORE[t] for t in attributes.get("vascularity", ()) if t in _COLOR_SCORE]
    cs = max(vasc) if vasc else None
    cs_eff = cs or 1
    irregular = bool(set(attributes.get("margin", ())) - {"circumscribed"}) or "irregular" in attributes.get(
        "shape", ()
    )
    big = max_diameter_mm is not None and max_diameter_mm >= 100.0
    septated = "septations" in internal
    if "solid" in internal and "mixed_cystic_solid" not in internal:
        if irregular:
            return OradsResult(5, "solid", cs, ("solid lesion with irregular outer contour",))
        cat = {1: 3, 2: 4, 3: 4, 4: 5}[cs_eff]
        return OradsResult(cat, "solid", cs, (f"smooth solid lesion, colour score {cs_eff}",))
    if "mixed_cystic_solid" in internal:
        if not septated:
            return OradsResult(4, "unilocular_solid", cs, ("unilocular cyst with solid component",))
        cat = 4 if cs_eff <= 2 else 5
        return OradsResult(
            cat, "multilocular_solid", cs, (f"multilocular cyst with solid component, colour score {cs_eff}",)
        )
    if septated:
        if big or cs_eff == 4 or irregular:
            return OradsResult(
                4, "multilocular", cs, ("multilocular cyst: >= 10 cm, CS 4 or irregular wall",)
            )
        return OradsResult(3, "multilocular", cs, ("multilocular cyst < 10 cm, smooth, CS 1-3",))
    simple = set(attributes.get("echogenicity", ())) <= {"anechoic"} and not internal & {"debris"}
    kind = "simple_cyst" if simple else "unilocular"
    if big:
        return OradsResult(3, kind, cs, ("unilocular cyst >= 10 cm",))
    return OradsResult(2, kind, cs, ("simple cyst < 10 cm" if simple else "unilocular smooth cyst < 10 cm",))
