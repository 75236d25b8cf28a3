"""Anatomy hierarchy: body system -> region -> organ.

Why a hand-written table: no maintained ontology package (RadLex, SNOMED CT, UBERON) installs
offline here or carries the *ultrasound reporting* synonyms a parser needs ("GB", "IJV", "CCA"),
and the region level is sonofm's own grouping (EchoVLM's seven regions plus the simulator's extra
ones). Organ ids are also the tag ids of the ``organ`` attribute dimension.

Synonyms are lowercase surface forms a report may use for the organ itself. Phrases that name a
*location within* an organ ("left lobe of the thyroid", "upper outer quadrant") are kept apart in
``Organ.locations`` so a parser can report them without mistaking them for another organ.

The body systems and organs are data, in anatomy.toml beside this module.
"""

from __future__ import annotations

from dataclasses import dataclass

from sonofm.taxonomy.tables import Term, entries, load


@dataclass(frozen=True)
class BodySystem(Term):
    """Top level of the hierarchy; also the tags of the ``body_system`` attribute dimension."""


@dataclass(frozen=True)
class Organ:
    """One organ (or organ-like target such as the fetus or soft tissue) and how reports name it."""

    id: str
    region: str
    system: str
    phrase: str
    synonyms: tuple[str, ...]
    definition: str
    locations: tuple[str, ...] = ()  # sub-organ locations a report may give (not organ synonyms)


_DATA = load("anatomy")
BODY_SYSTEMS: tuple[BodySystem, ...] = entries(_DATA["system"], BodySystem)

REGIONS: tuple[str, ...] = (
    "breast",
    "thyroid",
    "liver",
    "kidney",
    "gynaecology",
    "vessel",
    "heart",
    "abdomen",
    "urology",
    "superficial",
    "obstetric",
)
# EchoVLM's seven report-generation regions (docs/methods.md section 5).
CORE_REGIONS: tuple[str, ...] = ("breast", "gynaecology", "heart", "kidney", "liver", "thyroid", "vessel")

ORGANS: tuple[Organ, ...] = entries(_DATA["organ"], Organ)

_ORGANS_BY_ID = {o.id: o for o in ORGANS}
_SYSTEMS_BY_ID = {s.id: s for s in BODY_SYSTEMS}
SYSTEM_IDS: tuple[str, ...] = tuple(s.id for s in BODY_SYSTEMS)
ORGAN_IDS: tuple[str, ...] = tuple(o.id for o in ORGANS)


def _unknown(kind: str, value: object, valid: tuple[str, ...]) -> ValueError:
    return ValueError(f"unknown {kind} {value!r}; expected one of: {', '.join(valid)}")


def get_organ(organ_id: str) -> Organ:
    """The organ with this id; ValueError naming the valid ids otherwise."""
    try:
        return _ORGANS_BY_ID[organ_id]
    except (KeyError, TypeError):
        raise _unknown("organ", organ_id, ORGAN_IDS) from None


def get_system(system_id: str) -> BodySystem:
    """The body system with this id; ValueError naming the valid ids otherwise."""
    try:
        return _SYSTEMS_BY_ID[system_id]
    except (KeyError, TypeError):
        raise _unknown("body system", system_id, SYSTEM_IDS) from None


def organs_in(region: str) -> tuple[Organ, ...]:
    """Organs of a region, in table order."""
    if region not in REGIONS:
        raise _unknown("region", region, REGIONS)
    return tuple(o for o in ORGANS if o.region == region)


def region_of(organ_id: str) -> str:
    """The region an organ belongs to (e.g. gallbladder -> liver)."""
    return get_organ(organ_id).region


def system_of(organ_id: str) -> str:
    """The body system an organ belongs to (e.g. thyroid -> endocrine)."""
    return get_organ(organ_id).system


def organs_of_system(system_id: str) -> tuple[Organ, ...]:
    """Organs of a body system, in table order."""
    get_system(system_id)
    return tuple(o for o in ORGANS if o.system == system_id)


def regions_in(system_id: str) -> tuple[str, ...]:
    """Regions holding at least one organ of this system, in REGIONS order.

    A region can belong to several systems (abdomen: pancreas is digestive, spleen lymphatic).
    """
    get_system(system_id)
    used = {o.region for o in ORGANS if o.system == system_id}
    return tuple(r for r in REGIONS if r in used)


def systems_of_region(region: str) -> tuple[str, ...]:
    """Body systems of the organs in a region, in BODY_SYSTEMS order."""
    used = {o.system for o in organs_in(region)}
    return tuple(s for s in SYSTEM_IDS if s in used)


def default_organ(region: str) -> Organ:
    """The principal organ of a region (its first organ), e.g. liver -> liver, vessel -> carotid."""
    return organs_in(region)[0]
