"""The 9 attribute dimensions: contract ids, synonym hygiene, look-ups and validation."""

from __future__ import annotations

from collections import defaultdict

import pytest

from sonofm import taxonomy as T

# Taxonomy contract tag ids (docs/design.md "Taxonomy"), copied literally: a rename anywhere breaks this test.
CONTRACT_TAGS = {
    "diagnosis": ["nodule", "cyst", "mass", "fluid_collection", "normal"],
    "body_system": [
        "breast",
        "endocrine",
        "digestive",
        "urinary",
        "female_reproductive",
        "male_reproductive",
        "cardiovascular",
        "musculoskeletal",
        "lymphatic",
    ],
    "organ": [
        "breast",
        "thyroid",
        "liver",
        "gallbladder",
        "spleen",
        "pancreas",
        "kidney",
        "bladder",
        "ovary",
        "uterus",
        "fetus",
        "prostate",
        "testis",
        "carotid_artery",
        "jugular_vein",
        "heart",
        "lymph_node",
        "soft_tissue",
    ],
    "shape": ["oval", "round", "irregular", "lobulated", "taller_than_wide", "wider_than_tall", "tubular"],
    "margin": [
        "circumscribed",
        "indistinct",
        "angular",
        "microlobulated",
        "spiculated",
        "extrathyroidal_extension",
    ],
    "echogenicity": [
        "anechoic",
        "very_hypoechoic",
        "hypoechoic",
        "isoechoic",
        "hyperechoic",
        "heterogeneous",
    ],
    "internal": [
        "solid",
        "cystic",
        "mixed_cystic_solid",
        "spongiform",
        "septations",
        "debris",
        "microcalcifications",
        "macrocalcifications",
        "rim_calcifications",
        "comet_tail",
    ],
    "posterior": ["enhancement", "shadowing"],
    "vascularity": ["avascular", "minimal", "peripheral", "internal", "hypervascular"],
}


def test_dimensions_are_the_contract_nine_in_order():
    assert T.DIMENSIONS == (
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


@pytest.mark.parametrize("dimension", list(CONTRACT_TAGS))
def test_every_contract_tag_exists(dimension):
    ids = T.tag_ids(dimension)
    for tag_id in CONTRACT_TAGS[dimension]:
        tag = T.get_tag(dimension, tag_id)
        assert tag.id == tag_id and tag.dimension == dimension
        assert tag_id in ids
    if dimension in ("body_system", "organ"):
        assert len(ids) == len(CONTRACT_TAGS[dimension])  # these two mirror the anatomy exactly


def test_organ_dimension_mirrors_anatomy():
    assert T.tag_ids("organ") == T.ORGAN_IDS
    assert T.tag_ids("body_system") == T.SYSTEM_IDS
    for organ in T.ORGANS:
        tag = T.get_tag("organ", organ.id)
        assert tag.phrase == organ.phrase and set(organ.synonyms) <= set(tag.synonyms)


def test_tags_are_well_formed():
    for tag in T.all_tags():
        assert tag.phrase.lower() in tag.synonyms, tag
        assert tag.definition and "\n" not in tag.definition and tag.definition.endswith("."), tag
        assert tag.lexicon in T.LEXICONS, tag
        for s in tag.synonyms:
            assert s == s.lower() == T.normalize_phrase(s), (tag.id, s)
            assert not s.startswith(("no ", "not ", "without ")), (tag.id, s)  # negation is the parser's job


def test_all_tags_is_every_dimension_in_order():
    expected = [t for d in T.DIMENSIONS for t in T.tags(d)]
    assert list(T.all_tags()) == expected
    assert len({(t.dimension, t.id) for t in expected}) == len(expected)


@pytest.mark.parametrize("dimension", T.DIMENSIONS)
def test_no_synonym_maps_to_two_tags_of_one_dimension(dimension):
    owners = defaultdict(set)
    for tag in T.tags(dimension):
        for s in tag.synonyms:
            owners[s].add(tag.id)
    clashes = {s: ids for s, ids in owners.items() if len(ids) > 1}
    assert not clashes


def test_cross_dimension_overlaps_are_exactly_the_documented_ones():
    dims_of = defaultdict(set)
    for tag in T.all_tags():
        for s in tag.synonyms:
            dims_of[s].add(tag.dimension)
    overlaps = {s: tuple(sorted(d)) for s, d in dims_of.items() if len(d) > 1}
    assert overlaps == {s: tuple(sorted(d)) for s, d in T.CROSS_DIMENSION_OVERLAPS.items()}


def test_dimension_specific_phrases_for_shared_words():
    # "internal" vascularity vs "internal" content: the vascularity tag never claims the bare word.
    assert "internal" not in T.get_tag("vascularity", "internal").synonyms
    assert T.find_tag("vascularity", "internal vascularity").id == "internal"
    # bare "irregular" is a BI-RADS shape; the TI-RADS margin needs "irregular margins".
    assert T.find_tag("shape", "irregular").id == "irregular"
    assert T.find_tag("margin", "irregular margins").id == "irregular"
    assert T.find_tag("margin", "irregular") is None


@pytest.mark.parametrize(
    ("dimension", "text", "tag_id"),
    [
        ("echogenicity", "Hypo-echoic", "hypoechoic"),
        ("echogenicity", "low echogenicity", "hypoechoic"),
        ("echogenicity", "hypoechoic to the surrounding parenchyma", "hypoechoic"),
        ("echogenicity", "markedly hypoechoic", "very_hypoechoic"),
        ("echogenicity", "echo-free", "anechoic"),
        ("margin", "well-circumscribed", "circumscribed"),
        ("margin", "Well defined", "circumscribed"),
        ("margin", "smooth margins", "circumscribed"),
        ("margin", "ill-defined", "indistinct"),
        ("internal", "punctate echogenic foci", "microcalcifications"),
        ("internal", "micro-calcifications", "microcalcifications"),
        ("internal", "comet tail artifact", "comet_tail"),
        ("internal", "mixed cystic-solid", "mixed_cystic_solid"),
        ("posterior", "posterior acoustic shadowing", "shadowing"),
        ("posterior", "increased through-transmission", "enhancement"),
        ("shape", "non-parallel", "taller_than_wide"),
        ("shape", "parallel", "wider_than_tall"),
        ("vascularity", "color score 4", "hypervascular"),
        ("organ", "CCA", "carotid_artery"),
        ("organ", "IJV", "jugular_vein"),
        ("organ", "GB", "gallbladder"),
        ("organ", "thyroid gland", "thyroid"),
        ("diagnosis", "unremarkable", "normal"),
    ],
)
def test_find_tag_by_synonym(dimension, text, tag_id):
    assert T.find_tag(dimension, f"  {text}. ").id == tag_id


def test_tag_phrases_follow_tag_order():
    for d in T.DIMENSIONS:
        assert T.tag_phrases(d) == tuple(t.phrase for t in T.tags(d))
    assert T.get_tag("posterior", "shadowing").phrase == "posterior acoustic shadowing"


def test_unknown_ids_raise_value_error_naming_valid_ids():
    with pytest.raises(ValueError, match="oval"):
        T.get_tag("shape", "ovalish")
    with pytest.raises(ValueError, match="vascularity"):
        T.tags("colour")
    with pytest.raises(ValueError, match="vascularity"):
        T.get_tag("colour", "x")
    assert not T.has_tag("shape", "ovalish") and T.has_tag("shape", "oval") and not T.has_tag("nope", "oval")


def test_validate_attributes():
    T.validate_attributes({"shape": ["oval"], "margin": [], "internal": ["solid", "microcalcifications"]})
    with pytest.raises(ValueError, match=r"row 3\['shape'\].*ovalish"):
        T.validate_attributes({"shape": ["ovalish"]}, where="row 3")
    with pytest.raises(ValueError, match="dimension 'colour'"):
        T.validate_attributes({"colour": ["red"]})
    with pytest.raises(ValueError, match="list of tag ids"):
        T.validate_attributes({"shape": "oval"})


def test_mask_labels_are_the_contract_legend():
    assert T.MASK_LABELS == {
        0: "background",
        1: "lesion",
        2: "organ",
        3: "lv",
        4: "myocardium",
        5: "la",
        6: "rv",
        7: "ra",
        8: "pericardial_effusion",
        9: "vessel_lumen",
        10: "plaque",
    }
    assert all(T.mask_label_id(n) == i for i, n in T.MASK_LABELS.items())
    with pytest.raises(ValueError, match="plaque"):
        T.mask_label_id("tumour")
    for region in T.REGIONS:
        assert set(T.labels_for_region(region)) <= set(T.MASK_LABELS) and 0 in T.labels_for_region(region)


def test_vascular_and_stone_diagnoses():
    """Plaque, thrombus and stones are diagnoses of their own, not a 'mass' (tumour) of the organ."""
    ids = {t.id for t in T.tags("diagnosis")}
    assert {"plaque", "thrombus", "calculus"} <= ids
    assert set(CONTRACT_TAGS["diagnosis"]) <= ids  # the METHODS tags stay
    mass = T.get_tag("diagnosis", "mass")
    for tag_id, words in {
        "plaque": ("atheroma", "atherosclerotic plaque"),
        "thrombus": ("thrombosis", "blood clot"),
        "calculus": ("gallstone", "kidney stone", "stones", "nephrolithiasis"),
    }.items():
        tag = T.get_tag("diagnosis", tag_id)
        assert tag.definition and set(words) <= set(tag.synonyms)
        assert not set(words) & set(mass.synonyms)
