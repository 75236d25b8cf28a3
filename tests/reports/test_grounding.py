"""Grounding a drafted report in the study's measurements (sonofm/reports/grounding.py): the
numbers, the sex and the echo guideline findings become the study's; what the draft says about
the image stays; the parser reads the result back exactly."""

from __future__ import annotations

from sonofm.reports import parse_report
from sonofm.reports.grounding import ground_report, ground_study
from sonofm.reports.schema import Status

ECHO_DRAFT = (
    "Findings: Apical four-chamber view, end-systolic frame. Sex: F. LV ejection fraction is 62%. "
    "LVID(d) measures 47.3 mm. No pericardial fluid. Normal LV systolic function.\n"
    "Impression: Normal study."
)
# a man with LVEF 32 % (moderately reduced, 30-40 %) and LVIDd 68.5 mm (> 58.4 mm: severe dilation)
MEASURED = {"lvef_pct": 32.0, "lvidd_mm": 68.5, "tapse_mm": 21.0}


def test_echo_draft_takes_the_studys_numbers_sex_and_guideline_findings():
    text = ground_report(ECHO_DRAFT, MEASURED, "M", seed=3)
    study = parse_report(text, "heart").study
    assert study.measurements == MEASURED  # the draft's 62 % and 47.3 mm are gone
    assert study.sex == "M"
    assert study.view == "A4C" and study.frame == "ES"  # what the draft read from the image stays
    present = {f.tag: f.grade for f in study.findings if f.dimension == "echo" and f.status is Status.PRESENT}
    assert present == {"reduced_lvef": "moderate", "lv_dilation": "severe"}
    absent = {f.tag for f in study.findings if f.dimension == "echo" and f.status is Status.ABSENT}
    assert "rv_dysfunction" in absent  # TAPSE 21 mm >= 17 mm: stated as absent, not left out
    assert ground_report(ECHO_DRAFT, MEASURED, "M", seed=3) == text  # deterministic for a seed


def test_unknown_sex_is_not_guessed_and_lesion_drafts_keep_their_lesion():
    study = parse_report(ground_report(ECHO_DRAFT, MEASURED, None), "heart").study
    assert study.sex is None  # the draft said F; with no sex given none is stated
    draft = (
        "Findings: A 9 x 7 mm oval, circumscribed, hypoechoic solid mass in the breast.\n"
        "Impression: Hypoechoic mass in the breast."
    )
    got = parse_report(ground_report(draft, {"lesion_width_mm": 14.2, "lesion_height_mm": 8.6}, "F")).study
    assert got.organ == "breast"
    assert got.measurements == {"lesion_width_mm": 14.2, "lesion_height_mm": 8.6}
    before = {(f.dimension, f.tag) for f in parse_report(draft).study.present()}
    assert before <= {(f.dimension, f.tag) for f in got.present()}


def test_ground_study_leaves_its_input_alone():
    study = parse_report(ECHO_DRAFT, "heart").study
    before = study.to_dict()
    out = ground_study(study, MEASURED, "M")
    assert study.to_dict() == before and out.measurements == MEASURED
