"""Echo views, measurements and guideline rules: every cut-off just below and just above."""

from __future__ import annotations

import math

import pytest

from sonofm import taxonomy as T

CONTRACT_MEASUREMENTS = [
    "lvef_pct",
    "lv_edv_ml",
    "lv_esv_ml",
    "lvidd_mm",
    "lvids_mm",
    "ivsd_mm",
    "lvpwd_mm",
    "lavi_ml_m2",
    "la_diameter_mm",
    "tapse_mm",
    "e_e_prime_ratio",
    "pe_size_mm",
    "lesion_width_mm",
    "lesion_height_mm",
    "lesion_length_mm",
    "imt_mm",
    "kidney_length_mm",
]
CONTRACT_FINDINGS = [
    "reduced_lvef",
    "lv_hypertrophy",
    "lv_dilation",
    "la_enlargement",
    "rv_dysfunction",
    "elevated_filling_pressure",
    "pericardial_effusion",
]


def result(measurements, sex, finding):
    found = [r for r in T.evaluate_guidelines(measurements, sex) if r.finding == finding]
    assert len(found) <= 1
    return found[0] if found else None


def test_contract_views_frames_measurements_findings():
    assert T.ECHO_VIEWS == ("A4C", "A2C", "A3C", "PLAX", "PSAX_MV", "PSAX_PM", "PSAX_AP", "SC4C")
    assert T.FRAMES == ("ED", "ES")
    assert tuple(T.VIEWS) == T.ECHO_VIEWS
    assert set(CONTRACT_MEASUREMENTS) <= set(T.MEASUREMENTS)
    assert list(T.ECHO_FINDINGS) == CONTRACT_FINDINGS == list(T.GUIDELINE_RULES)
    assert T.ECHO_FINDINGS["reduced_lvef"].grades == ("mild", "moderate", "severe")
    assert T.ECHO_FINDINGS["pericardial_effusion"].grades == ("small", "moderate", "large")


def test_units_are_encoded_in_ids():
    suffix_unit = {"_pct": "%", "_mm": "mm", "_ml": "mL", "_ml_m2": "mL/m2", "_ratio": ""}
    for mid, m in T.MEASUREMENTS.items():
        assert m.id == mid
        suffix = max((s for s in suffix_unit if mid.endswith(s)), key=len)
        assert m.unit == suffix_unit[suffix], mid


@pytest.mark.parametrize(
    ("text", "view"),
    [
        ("apical four-chamber", "A4C"),
        ("A4C", "A4C"),
        ("4-chamber view", "A4C"),
        ("parasternal long axis", "PLAX"),
        ("PLAX", "PLAX"),
        ("PSAX at the papillary muscle level", "PSAX_PM"),
        ("subcostal", "SC4C"),
        ("apical long axis", "A3C"),
        ("PSAX MV", "PSAX_MV"),
        ("psax apex", "PSAX_AP"),
    ],
)
def test_view_synonyms(text, view):
    owners = [v.id for v in T.VIEWS.values() if text.lower() in v.synonyms]
    assert owners == [view]


@pytest.mark.parametrize(
    ("text", "mid"),
    [
        ("lvef", "lvef_pct"),
        ("ef", "lvef_pct"),
        ("ejection fraction", "lvef_pct"),
        ("lvidd", "lvidd_mm"),
        ("lv end-diastolic diameter", "lvidd_mm"),
        ("ivsd", "ivsd_mm"),
        ("septal thickness", "ivsd_mm"),
        ("tapse", "tapse_mm"),
        ("e/e'", "e_e_prime_ratio"),
        ("e/e prime", "e_e_prime_ratio"),
        ("lavi", "lavi_ml_m2"),
        ("la volume index", "lavi_ml_m2"),
    ],
)
def test_measurement_synonyms(text, mid):
    assert [m.id for m in T.MEASUREMENTS.values() if text in m.synonyms] == [mid]


@pytest.mark.parametrize("table", ["VIEWS", "MEASUREMENTS", "ECHO_FINDINGS"])
def test_echo_synonyms_unique_and_lowercase(table):
    seen: dict[str, str] = {}
    for key, item in getattr(T, table).items():
        assert item.phrase.lower() in item.synonyms
        for s in item.synonyms:
            assert s == s.lower() == T.normalize_phrase(s), (key, s)
            assert seen.setdefault(s, key) == key, f"{s!r} in {seen[s]} and {key}"


def test_sex_specific_normal_ranges_agree_with_rule_limits():
    # The upper normal limit of the chamber-quantification tables is each rule's cut-off.
    for sex in ("M", "F"):
        assert T.MEASUREMENTS["lvidd_mm"].normal_range(sex)[1] == T.threshold_for(
            "lv_dilation", "lvidd_mm", sex
        )
        for m in ("ivsd_mm", "lvpwd_mm"):
            assert T.MEASUREMENTS[m].normal_range(sex)[1] == T.threshold_for("lv_hypertrophy", m, sex)
        assert T.MEASUREMENTS["la_diameter_mm"].normal_range(sex)[1] == T.threshold_for(
            "la_enlargement", "la_diameter_mm", sex
        )
    assert T.MEASUREMENTS["lavi_ml_m2"].normal_range()[1] == T.threshold_for("la_enlargement") == 34.0
    assert T.MEASUREMENTS["lvef_pct"].normal == {"M": (52.0, 72.0), "F": (54.0, 74.0)}
    assert T.MEASUREMENTS["lesion_width_mm"].normal_range("F") is None


# (finding, measurement, sex, value, present, grade) at and around every cut-off.
CASES = [
    # reduced LVEF < 50; mild 41-49, moderate 30-40, severe < 30 (sex-independent)
    ("reduced_lvef", "lvef_pct", None, 50, False, None),
    ("reduced_lvef", "lvef_pct", "F", 49, True, "mild"),
    ("reduced_lvef", "lvef_pct", "M", 41, True, "mild"),
    ("reduced_lvef", "lvef_pct", "M", 40, True, "moderate"),
    ("reduced_lvef", "lvef_pct", "F", 30, True, "moderate"),
    ("reduced_lvef", "lvef_pct", None, 29, True, "severe"),
    # LV hypertrophy: > 10 mm men, > 9 mm women; grades 11-13/14-16/>=17 men, 10-12/13-15/>=16 women
    *[
        (f, m, s, v, p, g)
        for f in ["lv_hypertrophy"]
        for m in ["ivsd_mm", "lvpwd_mm"]
        for s, v, p, g in [
            ("M", 10.0, False, None),
            ("M", 10.1, True, "mild"),
            ("M", 13.0, True, "mild"),
            ("M", 13.1, True, "moderate"),
            ("M", 16.0, True, "moderate"),
            ("M", 16.1, True, "severe"),
            ("F", 9.0, False, None),
            ("F", 9.1, True, "mild"),
            ("F", 12.0, True, "mild"),
            ("F", 12.1, True, "moderate"),
            ("F", 15.0, True, "moderate"),
            ("F", 15.1, True, "severe"),
            (None, 10.0, False, None),
            (None, 10.1, True, "mild"),
        ]
    ],
    # LV dilation: LVIDd > 58.4 men, > 52.2 women
    ("lv_dilation", "lvidd_mm", "M", 58.4, False, None),
    ("lv_dilation", "lvidd_mm", "M", 58.5, True, "mild"),
    ("lv_dilation", "lvidd_mm", "M", 63.0, True, "mild"),
    ("lv_dilation", "lvidd_mm", "M", 63.1, True, "moderate"),
    ("lv_dilation", "lvidd_mm", "M", 68.0, True, "moderate"),
    ("lv_dilation", "lvidd_mm", "M", 68.1, True, "severe"),
    ("lv_dilation", "lvidd_mm", "F", 52.2, False, None),
    ("lv_dilation", "lvidd_mm", "F", 52.3, True, "mild"),
    ("lv_dilation", "lvidd_mm", "F", 56.2, True, "mild"),
    ("lv_dilation", "lvidd_mm", "F", 56.3, True, "moderate"),
    ("lv_dilation", "lvidd_mm", "F", 61.0, True, "moderate"),
    ("lv_dilation", "lvidd_mm", "F", 61.1, True, "severe"),
    ("lv_dilation", "lvidd_mm", None, 58.4, False, None),
    ("lv_dilation", "lvidd_mm", None, 58.5, True, "mild"),
    # LA enlargement: LAVI > 34 mL/m2 (mild 35-41, moderate 42-48, severe > 48)
    ("la_enlargement", "lavi_ml_m2", "M", 34.0, False, None),
    ("la_enlargement", "lavi_ml_m2", "F", 34.1, True, "mild"),
    ("la_enlargement", "lavi_ml_m2", None, 41.0, True, "mild"),
    ("la_enlargement", "lavi_ml_m2", None, 41.1, True, "moderate"),
    ("la_enlargement", "lavi_ml_m2", None, 48.0, True, "moderate"),
    ("la_enlargement", "lavi_ml_m2", None, 48.1, True, "severe"),
    # ... LA diameter when LAVI is missing: > 40 mm men, > 38 mm women
    ("la_enlargement", "la_diameter_mm", "M", 40.0, False, None),
    ("la_enlargement", "la_diameter_mm", "M", 40.1, True, "mild"),
    ("la_enlargement", "la_diameter_mm", "M", 46.1, True, "moderate"),
    ("la_enlargement", "la_diameter_mm", "M", 52.1, True, "severe"),
    ("la_enlargement", "la_diameter_mm", "F", 38.0, False, None),
    ("la_enlargement", "la_diameter_mm", "F", 38.1, True, "mild"),
    ("la_enlargement", "la_diameter_mm", "F", 42.1, True, "moderate"),
    ("la_enlargement", "la_diameter_mm", "F", 46.1, True, "severe"),
    ("la_enlargement", "la_diameter_mm", None, 40.0, False, None),
    # RV dysfunction: TAPSE < 17 mm
    ("rv_dysfunction", "tapse_mm", "M", 17.0, False, None),
    ("rv_dysfunction", "tapse_mm", "F", 16.9, True, None),
    # elevated filling pressure: average E/e' > 14
    ("elevated_filling_pressure", "e_e_prime_ratio", None, 14.0, False, None),
    ("elevated_filling_pressure", "e_e_prime_ratio", "F", 14.1, True, None),
    # pericardial effusion: > 0 mm; small < 10, moderate 10-20, large > 20
    ("pericardial_effusion", "pe_size_mm", None, 0.0, False, None),
    ("pericardial_effusion", "pe_size_mm", "M", 0.1, True, "small"),
    ("pericardial_effusion", "pe_size_mm", "F", 9.9, True, "small"),
    ("pericardial_effusion", "pe_size_mm", None, 10.0, True, "moderate"),
    ("pericardial_effusion", "pe_size_mm", None, 20.0, True, "moderate"),
    ("pericardial_effusion", "pe_size_mm", None, 20.1, True, "large"),
]


@pytest.mark.parametrize(("finding", "measurement", "sex", "value", "present", "grade"), CASES)
def test_guideline_cutoffs(finding, measurement, sex, value, present, grade):
    r = result({measurement: value}, sex, finding)
    assert r is not None
    assert (r.present, r.grade) == (present, grade), r.rule
    assert r.measurement == measurement and r.value == value
    assert r.source == T.GUIDELINE_RULES[finding].source and r.source
    assert T.is_abnormal(finding, measurement, value, sex) is present
    assert T.grade_for(finding, measurement, value, sex) == grade


def test_every_rule_and_limit_is_covered_on_both_sides():
    covered = {(f, m, s, p) for f, m, s, _, p, _ in CASES}
    for finding, rule in T.GUIDELINE_RULES.items():
        for m, limits in rule.limits.items():
            sexes = [None] if "any" in limits else ["M", "F"]
            for s in sexes:
                if s is None:
                    assert any((finding, m, x, p) in covered for x in (None, "M", "F") for p in (True,))
                    assert any((finding, m, x, False) in covered for x in (None, "M", "F"))
                else:
                    assert (finding, m, s, True) in covered and (finding, m, s, False) in covered, (
                        finding,
                        m,
                        s,
                    )


def test_unknown_sex_uses_the_male_limit_consistently():
    assert T.UNKNOWN_SEX_LIMIT == "M"
    # 9.5 mm septum: hypertrophy for a woman, normal for a man and for unknown sex.
    assert result({"ivsd_mm": 9.5}, "F", "lv_hypertrophy").present
    assert not result({"ivsd_mm": 9.5}, "M", "lv_hypertrophy").present
    assert not result({"ivsd_mm": 9.5}, None, "lv_hypertrophy").present
    for finding, rule in T.GUIDELINE_RULES.items():
        for m in rule.limits:
            assert T.threshold_for(finding, m, None) == T.threshold_for(finding, m, "M")
    assert T.threshold_for("lv_dilation", sex="female") == 52.2
    with pytest.raises(ValueError, match="sex"):
        T.evaluate_guidelines({"lvef_pct": 40}, "X")


def test_missing_measurements_give_no_result_not_a_negative():
    assert T.evaluate_guidelines({}, "M") == []
    assert T.evaluate_guidelines({"lesion_width_mm": 12.0}, "F") == []
    assert result({"lvef_pct": float("nan")}, "M", "reduced_lvef") is None
    assert result({"lvef_pct": None}, "M", "reduced_lvef") is None
    only = T.evaluate_guidelines({"tapse_mm": 20.0}, "F")
    assert [(r.finding, r.present) for r in only] == [("rv_dysfunction", False)]


def test_lv_hypertrophy_uses_either_wall_and_reports_the_worse():
    r = result({"ivsd_mm": 9.0, "lvpwd_mm": 14.0}, "M", "lv_hypertrophy")
    assert r.present and r.grade == "moderate" and r.measurement == "lvpwd_mm"
    r = result({"ivsd_mm": 17.5, "lvpwd_mm": 11.0}, "M", "lv_hypertrophy")
    assert r.grade == "severe" and r.measurement == "ivsd_mm"
    assert not result({"ivsd_mm": 9.0, "lvpwd_mm": 8.0}, "F", "lv_hypertrophy").present


def test_la_volume_index_takes_precedence_over_diameter():
    r = result({"lavi_ml_m2": 30.0, "la_diameter_mm": 45.0}, "M", "la_enlargement")
    assert not r.present and r.measurement == "lavi_ml_m2"
    r = result({"lavi_ml_m2": 36.0, "la_diameter_mm": 35.0}, "M", "la_enlargement")
    assert r.present and r.measurement == "lavi_ml_m2"


def test_values_are_rounded_to_reporting_precision_before_comparison():
    # LVEF is reported as an integer: 49.5 is written "50%" and must not be called reduced.
    assert not result({"lvef_pct": 49.5}, "M", "reduced_lvef").present
    assert result({"lvef_pct": 49.4}, "M", "reduced_lvef").present
    assert T.round_measurement("lvidd_mm", 58.45) == 58.5  # half away from zero, no float artefact
    assert T.round_measurement("lvef_pct", 40.5) == 41.0  # not banker's rounding
    assert result({"lvidd_mm": 58.44}, "M", "lv_dilation").present is False
    assert result({"lvidd_mm": 58.45}, "M", "lv_dilation").present is True


def test_boundary_values_straddle_every_threshold():
    for finding, rule in T.GUIDELINE_RULES.items():
        for m, limits in rule.limits.items():
            for sex in [None] if "any" in limits else ["M", "F", None]:
                normal, abnormal = T.boundary_values(finding, m, sex)
                step = 10.0 ** -T.MEASUREMENTS[m].decimals
                assert math.isclose(abs(abnormal - normal), step)
                assert not T.is_abnormal(finding, m, normal, sex)
                assert T.is_abnormal(finding, m, abnormal, sex)
                assert result({m: abnormal}, sex, finding).present
    assert T.boundary_values("reduced_lvef") == (50.0, 49.0)
    assert T.abnormal_direction("reduced_lvef") == "below" and T.abnormal_direction("lv_dilation") == "above"


def test_threshold_for_rejects_unknown_names():
    with pytest.raises(ValueError, match="reduced_lvef"):
        T.threshold_for("lv_failure")
    with pytest.raises(ValueError, match="lvidd_mm"):
        T.threshold_for("lv_dilation", "ivsd_mm")


def test_rule_text_is_readable():
    r = result({"e_e_prime_ratio": 15.2}, None, "elevated_filling_pressure")
    assert r.rule == "average E/e' 15.2 > 14"
    r = result({"lvidd_mm": 50.0}, None, "lv_dilation")
    assert r.rule == "LV end-diastolic diameter 50 mm <= 58.4 mm (M, sex unknown)"
    assert T.findings_present({"lvef_pct": 25, "pe_size_mm": 3}, "F") == {
        "reduced_lvef": "severe",
        "pericardial_effusion": "small",
    }


def test_non_numeric_measurement_is_a_clear_error():
    with pytest.raises(ValueError, match=r"measurements\['lvef_pct'\]: expected a number"):
        T.evaluate_guidelines({"lvef_pct": "fifty"}, "M")
