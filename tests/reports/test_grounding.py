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


def test_clinical_findings_of_a_draft_survive_grounding():
    """A draft's clinical findings outside the 9 dimensions (the parser reads them from free text)
    are written again: a thyroid draft "suspicious for malignancy" made the writer crash, and a
    kidney with hydronephrosis but no lesion came back "normal"."""
    text = ground_report(
        "Findings: There is a irregularly marginated, isoechoic nodule in the thyroid gland, "
        "suspicious for malignancy.",
        {},
        None,
    )
    got = {(f.dimension, f.tag, f.status) for f in parse_report(text).study.findings}
    # "suspicious for" is a hedge, and stays one
    assert ("diagnosis", "nodule", Status.PRESENT) in got and (
        "finding",
        "malignancy",
        Status.UNCERTAIN,
    ) in got
    text = ground_report("Findings: Mild hydronephrosis of the right kidney. No calculus.", {}, None)
    study = parse_report(text).study
    hydro = [f for f in study.findings if f.tag == "hydronephrosis"]
    assert hydro and hydro[0].status is Status.PRESENT and hydro[0].grade == "mild"
    assert "normal" not in text.lower()
    text = ground_report("Findings: Apical four-chamber view. Moderate mitral regurgitation.", MEASURED, "M")
    mr = [f for f in parse_report(text, "heart").study.findings if f.tag == "mitral_regurgitation"]
    assert mr and mr[0].status is Status.PRESENT and mr[0].grade == "moderate"


def test_every_clinical_finding_is_written_so_that_it_reads_back():
    from sonofm import taxonomy as tx
    from sonofm.reports import lexicon as lx
    from sonofm.reports.schema import Finding, Study
    from sonofm.reports.writer import write_report

    organs = {o.id: o for o in tx.ORGANS}
    checked = 0
    for fid, c in lx.CLINICAL.items():
        organ = next((o for o in c.organs if o in organs), None)
        if organ is None or "+" in fid:  # "a+b" entries are read as their two findings
            continue
        study = Study(region=organs[organ].region, organ=organ, findings=[Finding("finding", fid)])
        got = {(f.dimension, f.tag, f.status) for f in parse_report(write_report(study, 0)).study.findings}
        assert ("finding", fid, Status.PRESENT) in got, (fid, write_report(study, 0))
        checked += 1
    assert checked >= 50


def test_a_draft_agrees_with_the_findings_head():
    """The draft states the head's organ, diagnosis and descriptors; what the head does not decide
    (location, size, a negative it does not contradict) stays as drafted."""
    from sonofm.reports.grounding import agree_with_findings, agreeing_report

    draft = (
        "Findings: A 12 mm oval anechoic cyst is seen in the right lobe of the thyroid gland. "
        "No microcalcifications. No posterior acoustic shadowing.\nImpression: Thyroid cyst."
    )
    labels = {
        "organ": "thyroid",
        "view": None,
        "diagnosis": "nodule",
        "attributes": {"echogenicity": ["hypoechoic"], "posterior": ["shadowing"]},
    }
    study = agree_with_findings(parse_report(draft).study, labels)
    got = {(f.dimension, f.tag, f.status) for f in study.findings}
    assert ("diagnosis", "nodule", Status.PRESENT) in got and ("diagnosis", "cyst", Status.PRESENT) not in got
    assert ("echogenicity", "hypoechoic", Status.PRESENT) in got
    assert not any(f.tag in ("anechoic", "oval") for f in study.findings)  # drafted, not decided
    assert ("internal", "microcalcifications", Status.ABSENT) in got  # a negative the head leaves alone
    assert ("posterior", "shadowing", Status.ABSENT) not in got  # ... unless the head says otherwise
    text = agreeing_report(draft, labels, {"lesion_width_mm": 14.0}, "F")
    back = parse_report(text).study
    assert back.organ == "thyroid" and back.location == parse_report(draft).study.location
    assert back.measurements == {"lesion_width_mm": 14.0}
    # a head that decides only some dimensions leaves the others as drafted
    only = agree_with_findings(parse_report(draft).study, labels, dimensions=["diagnosis"])
    assert any(f.tag == "anechoic" for f in only.findings)
    # an organ with no echo view drops a drafted view; a decided view is stated
    echo = parse_report("Findings: Apical four-chamber view. Normal study.\nImpression: Normal.").study
    assert agree_with_findings(echo, {"organ": "breast", "view": None}).view is None
    assert agree_with_findings(echo, {"organ": "heart", "view": "PLAX"}).view == "PLAX"


def test_grounding_keeps_the_side_and_place_of_a_lesion():
    """A parsed study's laterality and location are written again, not replaced by a plausible
    one (a right-kidney mass must not become a left one)."""
    for draft in (
        "Findings: A 2 cm hypoechoic solid mass in the upper pole of the right kidney.",
        "Findings: A 12 mm anechoic cyst in the left lobe of the thyroid.",
        "Findings: A 9 mm oval hypoechoic mass in the left breast, upper outer quadrant.",
        "Findings: Mild hydronephrosis of the right kidney.",
    ):
        before = parse_report(draft).study
        for seed in range(4):
            after = parse_report(ground_report(draft, {}, None, seed=seed)).study
            assert (after.laterality, after.location) == (before.laterality, before.location), (draft, seed)
