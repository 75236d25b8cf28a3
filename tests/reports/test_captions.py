"""Contrastive captions: findings first, taxonomy words, nothing an image cannot show."""

from __future__ import annotations

import re

import numpy as np
import pytest

from sonofm.reports import Study
from sonofm.reports.captions import caption_for_row, contrastive_caption
from sonofm.reports.sampling import random_study
from sonofm.reports.schema import Finding, Status
from sonofm.reports.writer import write_report


def _lesion() -> Study:
    return Study(
        region="thyroid",
        organ="thyroid",
        sex="F",
        findings=[
            Finding("diagnosis", "nodule"),
            Finding("echogenicity", "hypoechoic"),
            Finding("shape", "taller_than_wide"),
            Finding("margin", "spiculated"),
            Finding("internal", "solid"),
            Finding("internal", "microcalcifications"),
            Finding("posterior", "shadowing"),
        ],
        measurements={"lesion_width_mm": 12.5},
    )


def test_caption_says_findings_in_taxonomy_words_without_numbers_or_sex() -> None:
    cap = contrastive_caption(_lesion())
    assert cap.startswith("Ultrasound of the thyroid gland: hypoechoic taller-than-wide solid nodule")
    for phrase in ("spiculated margins", "microcalcifications", "posterior acoustic shadowing"):
        assert phrase in cap
    assert not re.search(r"\d", cap)
    assert "female" not in cap.lower() and "sex" not in cap.lower()


def test_echo_caption_names_view_phase_and_present_findings_first() -> None:
    study = Study(
        region="heart",
        organ="heart",
        view="PLAX",
        frame="ES",
        findings=[
            Finding("echo", "pericardial_effusion", Status.ABSENT),
            Finding("echo", "reduced_lvef", Status.PRESENT, grade="severe"),
        ],
        measurements={"lvef_pct": 25.0},
    )
    cap = contrastive_caption(study)
    assert cap == (
        "Echocardiogram of the heart, parasternal long-axis view, end-systole: "
        "severe reduced left ventricular ejection fraction."
    )
    with_absent = contrastive_caption(study, absent=True)
    assert with_absent.endswith("No pericardial effusion.")


def test_normal_study_is_said_to_be_normal() -> None:
    study = Study(region="liver", organ="liver", findings=[Finding("diagnosis", "normal")])
    assert contrastive_caption(study) == "Ultrasound of the liver: normal liver."


@pytest.mark.parametrize("region", ["breast", "thyroid", "liver", "kidney", "heart"])
def test_caption_from_written_report_matches_caption_from_structure(region: str) -> None:
    """Real data has only report text: parsing it must give the caption the ground truth gives."""
    rng = np.random.default_rng(7)
    agree = 0
    for _ in range(20):
        study = random_study(rng, region=region)
        report = write_report(study, rng)
        from_text = caption_for_row({"report": report, "region": region, "structured": None})
        agree += from_text == contrastive_caption(study)
    assert agree == 20


def test_row_without_text_or_structure_has_empty_caption() -> None:
    assert caption_for_row({"report": None, "structured": None}) == ""
    assert caption_for_row({"report": "  ", "structured": "not json"}) == ""


def test_single_finding_captions_name_one_finding_each_in_the_caption_words() -> None:
    from sonofm.reports.captions import single_finding_captions

    study = _lesion()
    singles = single_finding_captions(study)
    full = contrastive_caption(study)
    descriptors = ["hypoechoic", "taller-than-wide", "spiculated margins", "solid", "microcalcifications"]
    descriptors.append("posterior acoustic shadowing")
    assert singles[0] == "Ultrasound of the thyroid gland: nodule."
    assert len(singles) == 1 + len(descriptors)
    for cap in singles[1:]:
        assert cap.startswith("Ultrasound of the thyroid gland: ")
        named = [d for d in descriptors if d in cap]
        assert len(named) == 1, cap  # exactly one finding per caption
        assert named[0] in full  # worded as the full caption words it
    assert single_finding_captions(Study(region="liver", organ="liver")) == []  # normal: nothing to split


def test_caption_sampler_is_deterministic_and_stays_within_its_variants() -> None:
    from sonofm.reports.captions import CaptionSampler

    row = {"structured": _lesion().to_dict(), "region": "thyroid"}
    sampler = CaptionSampler(0.5)
    variants = set(sampler.variants(row))
    draws = [sampler(row, np.random.default_rng([3, i])) for i in range(200)]
    assert draws == [sampler(row, np.random.default_rng([3, i])) for i in range(200)]
    assert set(draws) <= variants
    full = contrastive_caption(_lesion())
    share_full = draws.count(full) / len(draws)
    assert 0.35 < share_full < 0.65  # p_single 0.5
    assert len(set(draws)) > 4  # the single-finding captions are all drawn
    assert {CaptionSampler(0.0)(row, np.random.default_rng(i)) for i in range(20)} == {full}
    assert CaptionSampler(0.0).variants(row) == [full]
    normal = {"structured": Study(region="liver", organ="liver").to_dict()}
    assert CaptionSampler(1.0)(normal, np.random.default_rng(0)) == "Ultrasound of the liver: normal liver."
    with pytest.raises(ValueError, match="p_single"):
        CaptionSampler(1.5)
