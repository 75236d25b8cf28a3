"""Anatomy hierarchy: contract regions/organs and parent/child navigation round trips."""

from __future__ import annotations

from collections import Counter

import pytest

from sonofm import taxonomy as T

CONTRACT_REGIONS = {
    "breast": ["breast"],
    "thyroid": ["thyroid"],
    "liver": ["liver", "gallbladder"],
    "abdomen": ["spleen", "pancreas"],
    "kidney": ["kidney", "bladder"],
    "gynaecology": ["ovary", "uterus"],
    "obstetric": ["fetus"],
    "urology": ["prostate", "testis"],
    "vessel": ["carotid_artery", "jugular_vein"],
    "heart": ["heart"],
    "superficial": ["lymph_node", "soft_tissue"],
}


def test_regions_and_their_organs_match_the_contract():
    assert set(T.REGIONS) == set(CONTRACT_REGIONS)
    assert T.CORE_REGIONS == ("breast", "gynaecology", "heart", "kidney", "liver", "thyroid", "vessel")
    assert set(T.CORE_REGIONS) <= set(T.REGIONS)
    for region, organ_ids in CONTRACT_REGIONS.items():
        assert [o.id for o in T.organs_in(region)] == organ_ids


def test_every_organ_round_trips_through_region_and_system():
    assert Counter(o.id for o in T.ORGANS) == Counter(T.ORGAN_IDS) and len(set(T.ORGAN_IDS)) == len(T.ORGANS)
    for organ in T.ORGANS:
        assert T.get_organ(organ.id) is organ
        region, system = T.region_of(organ.id), T.system_of(organ.id)
        assert organ in T.organs_in(region)
        assert organ in T.organs_of_system(system)
        assert region in T.regions_in(system)
        assert system in T.systems_of_region(region)
        assert organ.definition and organ.phrase.lower() in organ.synonyms


def test_every_organ_is_in_exactly_one_region_and_every_system_is_used():
    placed = [o.id for r in T.REGIONS for o in T.organs_in(r)]
    assert sorted(placed) == sorted(T.ORGAN_IDS)
    for system in T.SYSTEM_IDS:
        assert T.organs_of_system(system), system
        regions = T.regions_in(system)
        assert regions and all(any(o.system == system for o in T.organs_in(r)) for r in regions)


@pytest.mark.parametrize(
    ("organ", "region", "system"),
    [
        ("thyroid", "thyroid", "endocrine"),
        ("gallbladder", "liver", "digestive"),
        ("heart", "heart", "cardiovascular"),
        ("carotid_artery", "vessel", "cardiovascular"),
        ("ovary", "gynaecology", "female_reproductive"),
        ("testis", "urology", "male_reproductive"),
        ("lymph_node", "superficial", "lymphatic"),
        ("bladder", "kidney", "urinary"),
        ("soft_tissue", "superficial", "musculoskeletal"),
    ],
)
def test_known_placements(organ, region, system):
    assert (T.region_of(organ), T.system_of(organ)) == (region, system)


def test_locations_are_not_organ_synonyms():
    thyroid = T.get_organ("thyroid")
    assert "left lobe of the thyroid" in thyroid.locations
    synonyms = {s for o in T.ORGANS for s in o.synonyms}
    for organ in T.ORGANS:
        assert not set(organ.locations) & (synonyms - set(organ.synonyms)), organ.id


def test_default_organ_is_first_of_region():
    assert T.default_organ("vessel").id == "carotid_artery"
    assert T.default_organ("liver").id == "liver"


def test_unknown_names_raise_value_error_listing_valid_ones():
    with pytest.raises(ValueError, match="thyroid"):
        T.get_organ("thyroids")
    with pytest.raises(ValueError, match="gynaecology"):
        T.organs_in("gynecology")
    with pytest.raises(ValueError, match="lymphatic"):
        T.regions_in("nervous")
