"""ACR TI-RADS worked examples, size recommendations, BI-RADS orderings, O-RADS categories."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sonofm import taxonomy as T

# Worked examples in the style of the ACR white paper (Tessler et al., JACR 2017, Fig. 1 scoring):
# (attributes, expected breakdown, total, level).
TIRADS_EXAMPLES = [
    (  # solid, hypoechoic, wider-than-tall, smooth, no echogenic foci: 2+2+0+0+0
        {
            "internal": ["solid"],
            "echogenicity": ["hypoechoic"],
            "shape": ["wider_than_tall"],
            "margin": ["circumscribed"],
        },
        {"composition": 2, "echogenicity": 2, "shape": 0, "margin": 0, "echogenic_foci": 0},
        4,
        "TR4",
    ),
    (  # spongiform: 0 points, no further points added for other categories
        {
            "internal": ["spongiform"],
            "echogenicity": ["isoechoic"],
            "shape": ["wider_than_tall"],
            "margin": ["circumscribed"],
        },
        {"composition": 0, "echogenicity": 0, "shape": 0, "margin": 0, "echogenic_foci": 0},
        0,
        "TR1",
    ),
    (  # solid, very hypoechoic, taller-than-wide, irregular margin, punctate echogenic foci: 2+3+3+2+3
        {
            "internal": ["solid", "microcalcifications"],
            "echogenicity": ["very_hypoechoic"],
            "shape": ["taller_than_wide"],
            "margin": ["irregular"],
        },
        {"composition": 2, "echogenicity": 3, "shape": 3, "margin": 2, "echogenic_foci": 3},
        13,
        "TR5",
    ),
    (  # mixed cystic and solid, isoechoic, macrocalcifications: 1+1+0+0+1
        {
            "internal": ["mixed_cystic_solid", "macrocalcifications"],
            "echogenicity": ["isoechoic"],
            "shape": ["wider_than_tall"],
            "margin": ["circumscribed"],
        },
        {"composition": 1, "echogenicity": 1, "shape": 0, "margin": 0, "echogenic_foci": 1},
        3,
        "TR3",
    ),
    (  # cystic, anechoic, large comet-tail artifacts (colloid): all zero
        {
            "internal": ["cystic", "comet_tail"],
            "echogenicity": ["anechoic"],
            "shape": ["wider_than_tall"],
            "margin": ["circumscribed"],
        },
        {"composition": 0, "echogenicity": 0, "shape": 0, "margin": 0, "echogenic_foci": 0},
        0,
        "TR1",
    ),
    (  # mixed cystic and solid, hyperechoic, smooth: 1+1 = 2
        {
            "internal": ["mixed_cystic_solid"],
            "echogenicity": ["hyperechoic"],
            "shape": ["wider_than_tall"],
            "margin": ["circumscribed"],
        },
        {"composition": 1, "echogenicity": 1, "shape": 0, "margin": 0, "echogenic_foci": 0},
        2,
        "TR2",
    ),
    (  # solid isoechoic with extrathyroidal extension and rim + punctate foci (additive): 2+1+0+3+5
        {
            "internal": ["solid", "rim_calcifications", "microcalcifications"],
            "echogenicity": ["isoechoic"],
            "shape": ["wider_than_tall"],
            "margin": ["extrathyroidal_extension"],
        },
        {"composition": 2, "echogenicity": 1, "shape": 0, "margin": 3, "echogenic_foci": 5},
        11,
        "TR5",
    ),
    (  # solid hypoechoic taller-than-wide, ill-defined: 2+2+3+0 = 7 -> TR5 (lowest TR5 total)
        {
            "internal": ["solid"],
            "echogenicity": ["hypoechoic"],
            "shape": ["taller_than_wide"],
            "margin": ["indistinct"],
        },
        {"composition": 2, "echogenicity": 2, "shape": 3, "margin": 0, "echogenic_foci": 0},
        7,
        "TR5",
    ),
    (  # solid hyperechoic smooth with a macrocalcification: 2+1+0+0+1 = 4 -> TR4
        {
            "internal": ["solid", "macrocalcifications"],
            "echogenicity": ["hyperechoic"],
            "shape": ["wider_than_tall"],
            "margin": ["circumscribed"],
        },
        {"composition": 2, "echogenicity": 1, "shape": 0, "margin": 0, "echogenic_foci": 1},
        4,
        "TR4",
    ),
]


@pytest.mark.parametrize(("attributes", "breakdown", "points", "level"), TIRADS_EXAMPLES)
def test_tirads_worked_examples(attributes, breakdown, points, level):
    r = T.tirads(attributes)
    assert r.breakdown == breakdown
    assert r.points == points == sum(r.breakdown.values())
    assert r.level == level
    assert r.undetermined == ()


@pytest.mark.parametrize(
    ("points", "level"),
    [(0, "TR1"), (1, "TR1"), (2, "TR2"), (3, "TR3"), (4, "TR4"), (6, "TR4"), (7, "TR5"), (14, "TR5")],
)
def test_tirads_level_boundaries(points, level):
    assert T.tirads_level(points) == level


def test_tirads_undetermined_categories_use_the_chart_defaults():
    r = T.tirads({"internal": ["solid"]})
    assert r.breakdown == {"composition": 2, "echogenicity": 1, "shape": 0, "margin": 0, "echogenic_foci": 0}
    assert r.undetermined == ("echogenicity", "shape", "margin")
    assert r.level == "TR3"


def test_tirads_rejects_unknown_tags():
    with pytest.raises(ValueError, match="ovalish"):
        T.tirads({"shape": ["ovalish"]})
    with pytest.raises(ValueError):
        T.tirads_level(-1)


_TIRADS_FEATURES = (
    [
        ("internal", t)
        for t in (
            "cystic",
            "mixed_cystic_solid",
            "solid",
            "macrocalcifications",
            "rim_calcifications",
            "microcalcifications",
            "comet_tail",
        )
    ]
    + [("echogenicity", t) for t in ("anechoic", "isoechoic", "hyperechoic", "hypoechoic", "very_hypoechoic")]
    + [("shape", "wider_than_tall"), ("shape", "taller_than_wide")]
    + [("margin", t) for t in ("circumscribed", "indistinct", "irregular", "extrathyroidal_extension")]
)


def _attrs(features):
    out: dict[str, list[str]] = {}
    for d, t in features:
        out.setdefault(d, []).append(t)
    return out


@settings(max_examples=150, deadline=None)
@given(st.sets(st.sampled_from(_TIRADS_FEATURES)), st.sampled_from(_TIRADS_FEATURES))
def test_tirads_adding_a_feature_never_lowers_points(features, extra):
    before = T.tirads(_attrs(features))
    after = T.tirads(_attrs(features | {extra}))
    if extra == ("echogenicity", "anechoic") and "echogenicity" in before.undetermined:
        # the only drop: an undetermined echogenicity (1 point) becomes anechoic (0 points)
        assert after.points == before.points - 1
    else:
        assert after.points >= before.points
    assert after.level == T.tirads_level(after.points)


def test_tirads_maps_birads_margins_to_lobulated_or_irregular():
    for margin in ("spiculated", "angular", "microlobulated", "irregular"):
        assert T.tirads({"margin": [margin]}).breakdown["margin"] == 2
    assert T.tirads({"margin": ["indistinct"]}).breakdown["margin"] == 0


@pytest.mark.parametrize(
    ("level", "size", "action"),
    [
        ("TR1", 60.0, "none"),
        ("TR2", 60.0, "none"),
        ("TR3", 14.9, "none"),
        ("TR3", 15.0, "follow_up"),
        ("TR3", 24.9, "follow_up"),
        ("TR3", 25.0, "fna"),
        ("TR4", 9.9, "none"),
        ("TR4", 10.0, "follow_up"),
        ("TR4", 14.9, "follow_up"),
        ("TR4", 15.0, "fna"),
        ("TR5", 4.9, "none"),
        ("TR5", 5.0, "follow_up"),
        ("TR5", 9.9, "follow_up"),
        ("TR5", 10.0, "fna"),
    ],
)
def test_tirads_recommendation_size_thresholds(level, size, action):
    rec = T.tirads_recommendation(level, size)
    assert rec.action == action and rec.level == level
    assert level in rec.text
    assert bool(rec.follow_up_years) == (action == "follow_up")


def test_tirads_recommendation_rejects_bad_input():
    with pytest.raises(ValueError, match="TR1"):
        T.tirads_recommendation("TR6", 10)
    with pytest.raises(ValueError, match="max_diameter_mm"):
        T.tirads_recommendation("TR4", float("nan"))


# ------------------------------------------------------------------------------------- BI-RADS
SIMPLE_CYST = {
    "diagnosis": ["cyst"],
    "shape": ["oval"],
    "margin": ["circumscribed"],
    "echogenicity": ["anechoic"],
    "internal": ["cystic"],
    "posterior": ["enhancement"],
}
COMPLICATED_CYST = {**SIMPLE_CYST, "internal": ["cystic", "debris"], "echogenicity": []}
FIBROADENOMA = {
    "diagnosis": ["mass"],
    "shape": ["oval", "wider_than_tall"],
    "margin": ["circumscribed"],
    "echogenicity": ["hypoechoic"],
    "internal": ["solid"],
}
INDISTINCT = {**FIBROADENOMA, "margin": ["indistinct"]}
IRREGULAR_INDISTINCT = {**INDISTINCT, "shape": ["irregular", "wider_than_tall"]}
IRREGULAR_ANGULAR_SHADOW = {**IRREGULAR_INDISTINCT, "margin": ["angular"], "posterior": ["shadowing"]}
CARCINOMA = {
    "diagnosis": ["mass"],
    "shape": ["irregular", "taller_than_wide"],
    "margin": ["spiculated"],
    "echogenicity": ["hypoechoic"],
    "internal": ["solid", "microcalcifications"],
    "posterior": ["shadowing"],
}
ORDER = [
    ("2", SIMPLE_CYST),
    ("3", COMPLICATED_CYST),
    ("3", FIBROADENOMA),
    ("4A", INDISTINCT),
    ("4B", IRREGULAR_INDISTINCT),
    ("4C", IRREGULAR_ANGULAR_SHADOW),
    ("5", CARCINOMA),
]


@pytest.mark.parametrize(("category", "attributes"), ORDER)
def test_birads_reference_lesions(category, attributes):
    r = T.birads(attributes)
    assert r.category == category, r.reasons
    assert r.suspicious is (category in ("4A", "4B", "4C", "5")) is r.malignant
    assert r.likelihood == T.risk.BIRADS_LIKELIHOOD[category]
    assert r.reasons


def test_birads_orderings_are_monotone_in_suspicion():
    ranks = [T.BIRADS_CATEGORIES.index(T.birads(a).category) for _, a in ORDER]
    assert ranks == sorted(ranks)
    # one feature at a time, starting from the fibroadenoma: each strictly worse or equal
    base = T.BIRADS_CATEGORIES.index(T.birads(FIBROADENOMA).category)
    for d, t in [
        ("margin", "spiculated"),
        ("shape", "taller_than_wide"),
        ("internal", "microcalcifications"),
        ("posterior", "shadowing"),
        ("margin", "angular"),
    ]:
        worse = {k: list(v) for k, v in FIBROADENOMA.items()}
        worse.setdefault(d, []).append(t)
        assert T.BIRADS_CATEGORIES.index(T.birads(worse).category) > base, (d, t)
    # spiculated is the strongest single margin feature
    spic = {**FIBROADENOMA, "margin": ["spiculated"]}
    ind = {**FIBROADENOMA, "margin": ["indistinct"]}
    assert T.birads(spic).score > T.birads(ind).score


def test_birads_normal_and_no_lesion():
    assert T.birads({"diagnosis": ["normal"], "organ": ["breast"], "body_system": ["breast"]}).category == "1"
    assert T.birads({}).category == "1"


def test_birads_cyst_with_suspicious_feature_is_not_benign():
    r = T.birads({**SIMPLE_CYST, "margin": ["microlobulated"]})
    assert r.suspicious


_BIRADS_FEATURES = sorted(T.risk.BIRADS_WEIGHTS)


@settings(max_examples=150, deadline=None)
@given(
    st.sets(
        st.sampled_from(
            _BIRADS_FEATURES
            + [
                ("internal", "cystic"),
                ("internal", "solid"),
                ("echogenicity", "anechoic"),
                ("margin", "circumscribed"),
            ]
        )
    ),
    st.sampled_from(_BIRADS_FEATURES),
)
def test_birads_adding_a_suspicious_feature_never_lowers_the_category(features, extra):
    before = T.birads(_attrs(features))
    after = T.birads(_attrs(features | {extra}))
    assert T.BIRADS_CATEGORIES.index(after.category) >= T.BIRADS_CATEGORIES.index(before.category)
    assert after.score >= before.score


# -------------------------------------------------------------------------------------- O-RADS
@pytest.mark.parametrize(
    ("attributes", "size", "category", "kind"),
    [
        (
            {"internal": ["cystic"], "echogenicity": ["anechoic"], "margin": ["circumscribed"]},
            45.0,
            2,
            "simple_cyst",
        ),
        ({"internal": ["cystic"], "echogenicity": ["anechoic"]}, 120.0, 3, "simple_cyst"),
        ({"internal": ["cystic", "debris"]}, 50.0, 2, "unilocular"),
        ({"internal": ["cystic", "septations"], "vascularity": ["minimal"]}, 60.0, 3, "multilocular"),
        ({"internal": ["cystic", "septations"], "vascularity": ["hypervascular"]}, 60.0, 4, "multilocular"),
        ({"internal": ["cystic", "septations"]}, 110.0, 4, "multilocular"),
        ({"internal": ["mixed_cystic_solid"]}, 50.0, 4, "unilocular_solid"),
        (
            {"internal": ["mixed_cystic_solid", "septations"], "vascularity": ["minimal"]},
            50.0,
            4,
            "multilocular_solid",
        ),
        (
            {"internal": ["mixed_cystic_solid", "septations"], "vascularity": ["internal"]},
            50.0,
            5,
            "multilocular_solid",
        ),
        (
            {"internal": ["solid"], "margin": ["circumscribed"], "vascularity": ["avascular"]},
            40.0,
            3,
            "solid",
        ),
        (
            {"internal": ["solid"], "margin": ["circumscribed"], "vascularity": ["peripheral"]},
            40.0,
            4,
            "solid",
        ),
        (
            {"internal": ["solid"], "margin": ["circumscribed"], "vascularity": ["hypervascular"]},
            40.0,
            5,
            "solid",
        ),
        ({"internal": ["solid"], "shape": ["irregular"], "vascularity": ["avascular"]}, 40.0, 5, "solid"),
    ],
)
def test_orads_categories(attributes, size, category, kind):
    r = T.orads(attributes, max_diameter_mm=size)
    assert (r.category, r.lesion_type) == (category, kind), r.reasons


def test_tirads_heterogeneous_scores_the_predominant_echogenicity():
    assert T.tirads({"echogenicity": ["heterogeneous"]}).breakdown["echogenicity"] == 1
    assert T.tirads({"echogenicity": ["heterogeneous", "hypoechoic"]}).breakdown["echogenicity"] == 2
    assert "echogenicity" not in T.tirads({"echogenicity": ["heterogeneous"]}).undetermined


def test_orads_rejects_unknown_tags():
    with pytest.raises(ValueError, match="orads attributes"):
        T.orads({"internal": ["solidish"]})
