"""The 9 attribute dimensions (docs/methods.md section 1) and their tag vocabularies.

Sources of the descriptor vocabularies:
- BI-RADS: ACR BI-RADS Atlas, 5th ed. (2013), ultrasound lexicon (shape, orientation, margin,
  echo pattern, posterior features, calcifications, vascularity).
- TI-RADS: Grant et al., JACR 2015 (thyroid US lexicon) and Tessler et al., JACR 2017 (ACR TI-RADS
  white paper): composition, echogenicity, shape, margin, echogenic foci.
- O-RADS: Andreotti et al., Radiology 2020 (O-RADS US risk stratification and lexicon):
  locularity, septations, solid components, colour score, tubular (hydrosalpinx-like) shapes.
- Adler: Adler et al., Ultrasound Med Biol 1990, semi-quantitative Doppler grades.

Conventions:
- ``Tag.phrase`` is how a report states the tag ("posterior acoustic shadowing").
- ``Tag.synonyms`` are every lowercase surface form a parser should map to the tag, the phrase
  included. No synonym belongs to two tags of one dimension (tested). A bare word that means
  different things in different dimensions is given to one dimension only, and the other uses
  the dimension-specific phrase: bare "irregular" is a *shape* (BI-RADS usage), the margin says
  "irregular margins"; vascularity ``internal`` is only "internal vascularity"/"internal flow",
  never bare "internal". Deliberate exact overlaps across dimensions are listed in
  ``CROSS_DIMENSION_OVERLAPS`` (tested to be the only ones).
- Negated forms ("no vascularity", "not parallel") are never synonyms: negation is the parser's
  job, and a synonym carrying its own negation cue would be negated twice.
- Margin: BI-RADS splits margins into circumscribed vs not circumscribed (indistinct, angular,
  microlobulated, spiculated); TI-RADS uses smooth / ill-defined / lobulated-or-irregular /
  extrathyroidal extension. sonofm keeps the BI-RADS terms and adds the TI-RADS
  ``irregular`` ("irregular or lobulated margins") and ``extrathyroidal_extension`` margins;
  TI-RADS "smooth" is a synonym of circumscribed and "ill-defined" of indistinct.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from sonofm.taxonomy.anatomy import BODY_SYSTEMS, ORGANS

DIMENSIONS: tuple[str, ...] = (
    "diagnosis",
    "body_system",
    "organ",
    "shape",
    "margin",
    "echogenicity",
    "internal",
    "posterior",
    "vascularity",
)
LEXICONS: tuple[str, ...] = ("BI-RADS", "TI-RADS", "O-RADS", "Adler", "anatomy", "general")


@dataclass(frozen=True)
class Tag:
    """One value of one attribute dimension."""

    id: str
    dimension: str
    phrase: str
    synonyms: tuple[str, ...]
    definition: str
    lexicon: str


def _t(dim: str, tag_id: str, phrase: str, synonyms: tuple[str, ...], definition: str, lexicon: str) -> Tag:
    # The phrase is always a synonym too, so a parser built from synonyms alone finds it.
    syns = tuple(dict.fromkeys((phrase.lower(), *synonyms)))
    return Tag(tag_id, dim, phrase, syns, definition, lexicon)


_DIAGNOSIS = (
    _t(
        "diagnosis",
        "nodule",
        "nodule",
        ("nodules", "nodular lesion", "nodular lesions"),
        "A discrete, usually solid or partly solid focal lesion distinct from the surrounding parenchyma.",
        "general",
    ),
    _t(
        "diagnosis",
        "cyst",
        "cyst",
        ("cysts", "cystic lesion", "cystic lesions"),
        "A fluid-filled, sharply marginated focal lesion with an imperceptible or thin wall.",
        "general",
    ),
    _t(
        "diagnosis",
        "mass",
        "mass",
        ("masses", "space-occupying lesion", "tumour", "tumor", "solid mass"),
        "A space-occupying lesion seen in two orthogonal planes that distorts the surrounding tissue.",
        "BI-RADS",
    ),
    _t(
        "diagnosis",
        "fluid_collection",
        "fluid collection",
        (
            "fluid collections",
            "collection",
            "free fluid",
            "loculated fluid",
            "abscess",
            "seroma",
            "haematoma",
            "hematoma",
            "ascites",
        ),
        "An abnormal accumulation of fluid (blood, pus, serous fluid) outside a normal cavity.",
        "general",
    ),
    _t(
        "diagnosis",
        "plaque",
        "plaque",
        ("plaques", "atherosclerotic plaque", "atheromatous plaque", "atheroma"),
        "A focal thickening of the arterial wall (intima-media) protruding into the lumen, made of "
        "lipid, fibrous tissue or calcium (atherosclerosis); Mannheim consensus: >= 0.5 mm or 50% "
        "above the surrounding intima-media thickness, or > 1.5 mm.",
        "general",
    ),
    _t(
        "diagnosis",
        "thrombus",
        "thrombus",
        ("thrombi", "thrombosis", "blood clot", "intraluminal thrombus", "venous thrombosis"),
        "A blood clot within a vessel lumen or cardiac chamber: echogenic intraluminal material, "
        "non-compressible, with absent or reduced flow around it.",
        "general",
    ),
    _t(
        "diagnosis",
        "calculus",
        "calculus",
        (
            "calculi",
            "stone",
            "stones",
            "gallstone",
            "gallstones",
            "renal calculus",
            "renal stone",
            "kidney stone",
            "bladder stone",
            "cholelithiasis",
            "nephrolithiasis",
            "urolithiasis",
        ),
        "A stone (gallstone, renal or bladder calculus): a bright echogenic focus with posterior "
        "acoustic shadowing, mobile within a fluid-filled lumen unless impacted.",
        "general",
    ),
    _t(
        "diagnosis",
        "normal",
        "normal appearance",
        (
            "normal",
            "unremarkable",
            "normal sonographic appearance",
            "within normal limits",
            "normal study",
            "normal echotexture",
        ),
        "The imaged organ looks normal, with no focal lesion or abnormal collection.",
        "general",
    ),
)

_BODY_SYSTEM = tuple(
    _t("body_system", s.id, s.phrase, s.synonyms, s.definition, "anatomy") for s in BODY_SYSTEMS
)
_ORGAN = tuple(_t("organ", o.id, o.phrase, o.synonyms, o.definition, "anatomy") for o in ORGANS)

_SHAPE = (
    _t(
        "shape",
        "oval",
        "oval",
        ("ovoid", "elliptical", "ellipsoid", "oval-shaped", "oval shape", "egg-shaped"),
        "Elliptical or egg-shaped, possibly with two or three gentle undulations.",
        "BI-RADS",
    ),
    _t(
        "shape",
        "round",
        "round",
        ("spherical", "circular", "round-shaped", "round shape", "rounded"),
        "Spherical or circular; the anteroposterior and transverse diameters are about equal.",
        "BI-RADS",
    ),
    _t(
        "shape",
        "irregular",
        "irregular shape",
        ("irregular", "irregularly shaped", "irregular in shape", "irregular-shaped", "irregular contour"),
        "Neither round nor oval: an angular or otherwise irregular outline.",
        "BI-RADS",
    ),
    _t(
        "shape",
        "lobulated",
        "lobulated",
        ("lobulated shape", "macrolobulated", "gently lobulated", "multilobulated", "lobular"),
        "Outline with several broad smooth undulations (macrolobulation).",
        "BI-RADS",
    ),
    _t(
        "shape",
        "taller_than_wide",
        "taller-than-wide",
        (
            "taller than wide",
            "taller than it is wide",
            "taller-than-wide shape",
            "non-parallel",
            "nonparallel",
            "non-parallel orientation",
            "nonparallel orientation",
            "vertically oriented",
            "vertical orientation",
            "anteroposterior diameter greater than transverse",
        ),
        "Anteroposterior diameter greater than the transverse diameter: long axis not parallel to the skin.",
        "TI-RADS",
    ),
    _t(
        "shape",
        "wider_than_tall",
        "wider-than-tall",
        (
            "wider than tall",
            "wider than it is tall",
            "wider-than-tall shape",
            "parallel",
            "parallel orientation",
            "parallel to the skin",
            "horizontally oriented",
            "horizontal orientation",
        ),
        "Transverse diameter greater than the anteroposterior diameter: long axis parallel to the skin.",
        "TI-RADS",
    ),
    _t(
        "shape",
        "tubular",
        "tubular",
        ("tubular shape", "tubular structure", "tube-shaped", "sausage-shaped", "elongated tubular"),
        "Elongated fluid-filled tube-like structure, e.g. a dilated duct or hydrosalpinx.",
        "O-RADS",
    ),
)

_MARGIN = (
    _t(
        "margin",
        "circumscribed",
        "circumscribed margins",
        (
            "circumscribed",
            "circumscribed margin",
            "well-circumscribed",
            "well circumscribed",
            "well-defined",
            "well defined",
            "smooth margins",
            "smooth margin",
            "smoothly marginated",
            "sharply defined",
            "sharp margins",
            "well-marginated",
            "well marginated",
            "smooth",
        ),
        "A well-defined, sharp margin with an abrupt transition between lesion and surrounding tissue.",
        "BI-RADS",
    ),
    _t(
        "margin",
        "indistinct",
        "indistinct margins",
        (
            "indistinct",
            "indistinct margin",
            "ill-defined",
            "ill defined",
            "ill-defined margins",
            "poorly defined",
            "poorly circumscribed",
            "ill-circumscribed",
            "blurred margins",
        ),
        "No clear demarcation between the lesion and the surrounding tissue.",
        "BI-RADS",
    ),
    _t(
        "margin",
        "angular",
        "angular margins",
        ("angular", "angular margin", "angulated margins", "angulated"),
        "Part or all of the margin has sharp corners, often forming acute angles.",
        "BI-RADS",
    ),
    _t(
        "margin",
        "microlobulated",
        "microlobulated margins",
        ("microlobulated", "microlobulated margin", "micro-lobulated", "microlobulation"),
        "The margin has short-cycle undulations, like small scallops.",
        "BI-RADS",
    ),
    _t(
        "margin",
        "spiculated",
        "spiculated margins",
        ("spiculated", "spiculated margin", "spiculation", "spiculations", "stellate", "radiating spicules"),
        "The margin is formed or characterised by sharp lines radiating from the lesion.",
        "BI-RADS",
    ),
    _t(
        "margin",
        "irregular",
        "irregular margins",
        (
            "irregular margin",
            "irregularly marginated",
            "irregular borders",
            "irregular border",
            "lobulated margins",
            "lobulated margin",
            "lobulated or irregular margins",
        ),
        "Jagged, spiculated or sharply angled edge, or focal rounded protrusions into the adjacent tissue.",
        "TI-RADS",
    ),
    _t(
        "margin",
        "extrathyroidal_extension",
        "extrathyroidal extension",
        (
            "extra-thyroidal extension",
            "extrathyroidal invasion",
            "ete",
            "extension beyond the thyroid capsule",
            "extracapsular extension",
        ),
        "The lesion extends through the thyroid capsule into adjacent soft tissue or structures.",
        "TI-RADS",
    ),
)

_ECHOGENICITY = (
    _t(
        "echogenicity",
        "anechoic",
        "anechoic",
        ("an-echoic", "echo-free", "echo free", "echofree", "anechogenic", "sonolucent"),
        "Without internal echoes: black like simple fluid.",
        "BI-RADS",
    ),
    _t(
        "echogenicity",
        "very_hypoechoic",
        "very hypoechoic",
        (
            "markedly hypoechoic",
            "very hypo-echoic",
            "marked hypoechogenicity",
            "markedly hypoechogenic",
            "more hypoechoic than the strap muscles",
            "hypoechoic relative to the strap muscles",
        ),
        "Darker than the adjacent strap muscles of the neck.",
        "TI-RADS",
    ),
    _t(
        "echogenicity",
        "hypoechoic",
        "hypoechoic",
        (
            "hypo-echoic",
            "hypoechogenic",
            "low echogenicity",
            "hypoechoic to the surrounding parenchyma",
            "hypoechoic relative to the surrounding parenchyma",
            "reduced echogenicity",
            "decreased echogenicity",
            "hypoechoic to fat",
            "mildly hypoechoic",
        ),
        "Less echogenic (darker) than the surrounding parenchyma or fat.",
        "BI-RADS",
    ),
    _t(
        "echogenicity",
        "isoechoic",
        "isoechoic",
        (
            "iso-echoic",
            "isoechogenic",
            "isoechoic to the surrounding parenchyma",
            "similar echogenicity",
            "same echogenicity as the surrounding parenchyma",
        ),
        "Same echogenicity as the surrounding parenchyma or fat.",
        "BI-RADS",
    ),
    _t(
        "echogenicity",
        "hyperechoic",
        "hyperechoic",
        (
            "hyper-echoic",
            "hyperechogenic",
            "echogenic",
            "increased echogenicity",
            "high echogenicity",
            "hyperechoic to the surrounding parenchyma",
            "bright",
        ),
        "More echogenic (brighter) than the surrounding parenchyma or fat.",
        "BI-RADS",
    ),
    _t(
        "echogenicity",
        "heterogeneous",
        "heterogeneous",
        (
            "heterogenous",
            "heterogeneous echotexture",
            "heterogeneous echogenicity",
            "inhomogeneous",
            "mixed echogenicity",
            "heterogeneous echo pattern",
            "coarse echotexture",
        ),
        "A mixture of echogenic and hypoechoic areas within the lesion.",
        "BI-RADS",
    ),
)

_INTERNAL = (
    _t(
        "internal",
        "solid",
        "solid",
        (
            "entirely solid",
            "completely solid",
            "almost completely solid",
            "solid or almost completely solid",
            "solid composition",
            "solid component",
            "solid echotexture",
        ),
        "Composed entirely or nearly entirely of soft tissue, with at most a few tiny cystic spaces.",
        "TI-RADS",
    ),
    _t(
        "internal",
        "cystic",
        "cystic",
        (
            "purely cystic",
            "entirely cystic",
            "completely cystic",
            "almost completely cystic",
            "cystic or almost completely cystic",
            "fluid-filled",
            "fluid filled",
            "simple fluid",
        ),
        "Composed entirely or almost entirely of fluid.",
        "TI-RADS",
    ),
    _t(
        "internal",
        "mixed_cystic_solid",
        "mixed cystic and solid",
        (
            "mixed cystic-solid",
            "mixed solid and cystic",
            "mixed cystic/solid",
            "complex cystic and solid",
            "cystic and solid",
            "solid and cystic",
            "cystic-solid",
            "solid-cystic",
            "predominantly solid",
            "predominantly cystic",
            "partially cystic",
            "partly cystic",
            "cystic and solid components",
        ),
        "Contains both fluid and soft-tissue components.",
        "TI-RADS",
    ),
    _t(
        "internal",
        "spongiform",
        "spongiform",
        ("spongiform appearance", "sponge-like", "honeycomb appearance", "honeycomb pattern"),
        "Composed predominantly (more than half) of small cystic spaces.",
        "TI-RADS",
    ),
    _t(
        "internal",
        "septations",
        "internal septations",
        (
            "septations",
            "septation",
            "septated",
            "septa",
            "multilocular",
            "multiloculated",
            "thin septations",
            "thick septations",
        ),
        "Thin or thick strands of tissue dividing a cystic lesion into locules.",
        "O-RADS",
    ),
    _t(
        "internal",
        "debris",
        "internal debris",
        (
            "debris",
            "internal echoes",
            "low-level echoes",
            "low level echoes",
            "low-level internal echoes",
            "layering debris",
            "fluid-debris level",
            "sludge",
            "echogenic debris",
        ),
        "Mobile low-level echoes within fluid, such as blood, pus or proteinaceous material.",
        "BI-RADS",
    ),
    _t(
        "internal",
        "microcalcifications",
        "microcalcifications",
        (
            "microcalcification",
            "micro-calcifications",
            "micro-calcification",
            "micro calcifications",
            "punctate echogenic foci",
            "punctate echogenic focus",
            "punctate calcifications",
            "stippled calcifications",
            "calcifications in a mass",
        ),
        "Tiny (under 1 mm) punctate echogenic foci without posterior shadowing.",
        "TI-RADS",
    ),
    _t(
        "internal",
        "macrocalcifications",
        "macrocalcifications",
        (
            "macrocalcification",
            "macro-calcifications",
            "macro-calcification",
            "coarse calcifications",
            "coarse calcification",
            "large calcifications",
            "dense calcifications",
            "coarse calcific foci",
        ),
        "Large echogenic foci that cause posterior acoustic shadowing.",
        "TI-RADS",
    ),
    _t(
        "internal",
        "rim_calcifications",
        "peripheral rim calcifications",
        (
            "rim calcifications",
            "rim calcification",
            "peripheral calcifications",
            "peripheral calcification",
            "peripheral rim calcification",
            "eggshell calcification",
            "eggshell calcifications",
            "rim-calcified",
        ),
        "Complete or incomplete calcification along the lesion margin.",
        "TI-RADS",
    ),
    _t(
        "internal",
        "comet_tail",
        "comet-tail artifacts",
        (
            "comet-tail artifact",
            "comet tail artifacts",
            "comet tail artifact",
            "comet-tail",
            "comet tail",
            "large comet-tail artifacts",
            "ring-down artifact",
            "comet-tail artefacts",
            "comet-tail artefact",
        ),
        "Echogenic foci with a tapering trail of reverberation echoes, typical of colloid.",
        "TI-RADS",
    ),
)

_POSTERIOR = (
    _t(
        "posterior",
        "enhancement",
        "posterior acoustic enhancement",
        (
            "posterior enhancement",
            "acoustic enhancement",
            "increased through-transmission",
            "increased through transmission",
            "through transmission",
            "through-transmission",
            "enhanced through-transmission",
            "distal enhancement",
            "distal acoustic enhancement",
            "posterior acoustic enhancing",
        ),
        "Brighter echoes deep to the lesion because sound passes through it with little attenuation.",
        "BI-RADS",
    ),
    _t(
        "posterior",
        "shadowing",
        "posterior acoustic shadowing",
        (
            "posterior shadowing",
            "acoustic shadowing",
            "acoustic shadow",
            "shadowing",
            "distal shadowing",
            "distal acoustic shadowing",
            "posterior shadow",
            "posterior acoustic shadow",
            "shadow",
        ),
        "Darker band deep to the lesion because it attenuates or reflects the sound.",
        "BI-RADS",
    ),
)

_VASCULARITY = (
    _t(
        "vascularity",
        "avascular",
        "avascular",
        ("nonvascular", "non-vascular", "color score 1", "colour score 1", "adler grade 0"),
        "No Doppler flow detectable within or around the lesion.",
        "O-RADS",
    ),
    _t(
        "vascularity",
        "minimal",
        "minimal vascularity",
        (
            "minimal flow",
            "minimal color flow",
            "minimal colour flow",
            "minimal doppler flow",
            "scant vascularity",
            "scant flow",
            "sparse flow",
            "mild vascularity",
            "color score 2",
            "colour score 2",
            "adler grade 1",
        ),
        "Only one or two small vessels or spots of Doppler flow.",
        "O-RADS",
    ),
    _t(
        "vascularity",
        "peripheral",
        "peripheral vascularity",
        (
            "peripheral flow",
            "peripheral blood flow",
            "peripheral vascular flow",
            "vessels in rim",
            "rim vascularity",
            "perinodular flow",
            "perilesional flow",
            "circumferential flow",
        ),
        "Doppler flow mainly around the margin of the lesion.",
        "BI-RADS",
    ),
    _t(
        "vascularity",
        "internal",
        "internal vascularity",
        (
            "internal flow",
            "internal blood flow",
            "intralesional flow",
            "intralesional vascularity",
            "intranodular flow",
            "intranodular vascularity",
            "central vascularity",
            "central flow",
            "color score 3",
            "colour score 3",
            "adler grade 2",
        ),
        "Doppler flow within the lesion.",
        "BI-RADS",
    ),
    _t(
        "vascularity",
        "hypervascular",
        "marked vascularity",
        (
            "hypervascular",
            "hypervascularity",
            "markedly increased vascularity",
            "increased vascularity",
            "abundant flow",
            "abundant vascularity",
            "very strong flow",
            "marked internal vascularity",
            "color score 4",
            "colour score 4",
            "adler grade 3",
        ),
        "Abundant Doppler flow, many vessels within the lesion.",
        "O-RADS",
    ),
)

_TAGS: dict[str, tuple[Tag, ...]] = {
    "diagnosis": _DIAGNOSIS,
    "body_system": _BODY_SYSTEM,
    "organ": _ORGAN,
    "shape": _SHAPE,
    "margin": _MARGIN,
    "echogenicity": _ECHOGENICITY,
    "internal": _INTERNAL,
    "posterior": _POSTERIOR,
    "vascularity": _VASCULARITY,
}
_BY_ID: dict[str, dict[str, Tag]] = {d: {t.id: t for t in ts} for d, ts in _TAGS.items()}

# Exact synonyms shared by two dimensions on purpose (tested to be the complete list): the breast
# is both a body system and its only organ, so "breast" names both.
CROSS_DIMENSION_OVERLAPS: dict[str, tuple[str, ...]] = {
    "breast": ("body_system", "organ"),
}


def _check_dimension(dimension: str) -> None:
    if dimension not in _TAGS:
        raise ValueError(
            f"unknown attribute dimension {dimension!r}; expected one of: {', '.join(DIMENSIONS)}"
        )


def tags(dimension: str) -> tuple[Tag, ...]:
    """All tags of one dimension, in their canonical order."""
    _check_dimension(dimension)
    return _TAGS[dimension]


def tag_ids(dimension: str) -> tuple[str, ...]:
    """Tag ids of one dimension, in the same order as ``tags``."""
    return tuple(t.id for t in tags(dimension))


def tag_phrases(dimension: str) -> tuple[str, ...]:
    """Canonical phrases of one dimension, in the order of ``tags`` (rows of the similarity matrix)."""
    return tuple(t.phrase for t in tags(dimension))


def get_tag(dimension: str, tag_id: str) -> Tag:
    """The tag ``tag_id`` of ``dimension``; ValueError naming the valid ids otherwise."""
    _check_dimension(dimension)
    try:
        return _BY_ID[dimension][tag_id]
    except (KeyError, TypeError):
        valid = ", ".join(_BY_ID[dimension])
        raise ValueError(f"unknown {dimension} tag {tag_id!r}; expected one of: {valid}") from None


def has_tag(dimension: str, tag_id: str) -> bool:
    """Whether ``tag_id`` is a tag of ``dimension`` (False for an unknown dimension)."""
    return tag_id in _BY_ID.get(dimension, {})


def all_tags() -> tuple[Tag, ...]:
    """Every tag of every dimension, dimension by dimension in DIMENSIONS order."""
    return tuple(t for d in DIMENSIONS for t in _TAGS[d])


_SPACES = re.compile(r"\s+")


def normalize_phrase(text: str) -> str:
    """Lowercase, trim surrounding punctuation and collapse whitespace (how synonyms are stored)."""
    return _SPACES.sub(" ", text.lower()).strip(' \t\n.,;:!?"')


@cache
def synonym_index(dimension: str) -> dict[str, str]:
    """Map every synonym of a dimension to its tag id (unique by construction, see module doc)."""
    out: dict[str, str] = {}
    for t in tags(dimension):
        for s in t.synonyms:
            out.setdefault(s, t.id)
    return out


def find_tag(dimension: str, text: str) -> Tag | None:
    """The tag whose synonym equals ``text`` after normalisation, or None."""
    tag_id = synonym_index(dimension).get(normalize_phrase(text))
    return None if tag_id is None else _BY_ID[dimension][tag_id]


def validate_attributes(attributes: dict[str, list[str]], *, where: str = "attributes") -> None:
    """Raise ValueError naming ``where`` and the bad dimension/tag if ``attributes`` uses unknown ids."""
    for dim, ids in attributes.items():
        if dim not in _TAGS:
            raise ValueError(f"{where}: unknown dimension {dim!r}; expected one of: {', '.join(DIMENSIONS)}")
        if isinstance(ids, str):
            raise ValueError(f"{where}[{dim!r}]: expected a list of tag ids, got the string {ids!r}")
        for tag_id in ids:
            if tag_id not in _BY_ID[dim]:
                valid = ", ".join(_BY_ID[dim])
                raise ValueError(f"{where}[{dim!r}]: unknown tag {tag_id!r}; expected one of: {valid}")
