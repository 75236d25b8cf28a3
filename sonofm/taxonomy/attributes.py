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

The tag tables are data, in attributes.toml beside this module; body system and organ tags come
from ``anatomy``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from sonofm.taxonomy.anatomy import BODY_SYSTEMS, ORGANS
from sonofm.taxonomy.tables import load, with_phrase

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
    return Tag(tag_id, dim, phrase, with_phrase(phrase, synonyms), definition, lexicon)


_DATA = load("attributes")


def _dimension_tags(dim: str) -> tuple[Tag, ...]:
    """The tags of one dimension: body systems and organs are the anatomy's own entries, the
    descriptor dimensions are data (attributes.toml)."""
    if dim == "body_system":
        return tuple(_t(dim, s.id, s.phrase, s.synonyms, s.definition, "anatomy") for s in BODY_SYSTEMS)
    if dim == "organ":
        return tuple(_t(dim, o.id, o.phrase, o.synonyms, o.definition, "anatomy") for o in ORGANS)
    return tuple(
        _t(dim, key, e["phrase"], e["synonyms"], e["definition"], e["lexicon"])
        for key, e in _DATA[dim].items()
    )


_TAGS: dict[str, tuple[Tag, ...]] = {d: _dimension_tags(d) for d in DIMENSIONS}
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
