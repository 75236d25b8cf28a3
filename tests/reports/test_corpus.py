"""The parser on the hand-written corpus (issue #22), the `report eval` command, and the phrasing
the issue found unread (abbreviations, hedges, laterality/location, numbers that are findings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sonofm import taxonomy as tx
from sonofm.cli import app
from sonofm.errors import DataError
from sonofm.reports import Status, parse_report
from sonofm.reports.corpus import evaluate, load_corpus

CORPUS = Path(__file__).parent / "data" / "corpus.jsonl"


@pytest.fixture(scope="module")
def result():
    return evaluate(load_corpus(CORPUS))


def test_corpus_covers_every_region(result):
    items = load_corpus(CORPUS)
    assert len(items) >= 200
    assert set(result.regions) == set(tx.REGIONS)
    assert all(
        s.tp + s.fn >= 40 for s in result.regions.values()
    )  # enough facts per region to mean something


def test_corpus_scores_meet_the_bar(result):
    assert result.total.f1 >= 0.95, result.to_dict()["micro"]
    assert result.total.precision >= 0.93 and result.total.recall >= 0.93
    for region, s in result.regions.items():
        assert s.f1 >= 0.9, (region, s.to_dict())
    for field in ("negated", "uncertain", "laterality", "location", "measurement"):
        assert result.fields[field].f1 >= 0.9, (field, result.fields[field].to_dict())


def _facts(text: str, region: str) -> set[tuple[str, str, str]]:
    return {(f.dimension, f.tag, f.status.value) for f in parse_report(text, region).study.findings}


def test_numbers_become_guideline_findings():
    st = parse_report("LVEF 35%.", "heart").study
    assert st.measurements == {"lvef_pct": 35.0}
    f = next(f for f in st.findings if f.tag == "reduced_lvef")
    assert f.status is Status.PRESENT and f.grade == "moderate"
    assert ("echo", "reduced_lvef", "absent") in _facts("EF 60%.", "heart")
    # a stated finding is not overridden by the number
    assert ("echo", "reduced_lvef", "present") in _facts(
        "Mildly reduced LV systolic function, LVEF 53%.", "heart"
    )


def test_laterality_location_and_distance_from_nipple():
    st = parse_report("Left breast 2 o'clock, 3 cm FN: 12 x 8 mm irregular hypoechoic mass.", "breast").study
    assert (st.laterality, st.location) == ("left", "2 o'clock")
    assert st.measurements == {
        "distance_from_nipple_mm": 30.0,
        "lesion_width_mm": 12.0,
        "lesion_height_mm": 8.0,
    }
    st = parse_report("Right lobe: solid nodule.", "thyroid").study
    assert (st.laterality, st.location, st.organ) == ("right", "right lobe", "thyroid")
    st = parse_report("Right lobe of the liver: 2 cm cyst.", "liver").study
    assert (st.laterality, st.location) == (None, "right lobe")  # the liver has no side
    assert parse_report("No hydronephrosis bilaterally.", "kidney").study.laterality == "bilateral"


def test_abbreviations_hedges_and_outside_findings():
    assert _facts("Echogenic focus c/w calculus w/ shadowing.", "kidney") == {
        ("echogenicity", "hyperechoic", "present"),
        ("diagnosis", "calculus", "present"),
        ("posterior", "shadowing", "present"),
    }
    assert ("internal", "macrocalcifications", "present") in _facts("Nodule with coarse calcs.", "thyroid")
    assert ("diagnosis", "nodule", "uncertain") in _facts("Cannot exclude a small nodule.", "thyroid")
    assert ("finding", "hepatic_steatosis", "present") in _facts("Fatty liver.", "liver")
    got = _facts("Moderate effusion with RA and RV diastolic collapse, c/w tamponade.", "heart")
    assert {("finding", "ra_collapse", "present"), ("finding", "rv_collapse", "present")} <= got
    assert ("finding", "tamponade", "present") in got
    assert parse_report("Pericardial effusion measuring 15 mm.", "heart").study.measurements == {
        "pe_size_mm": 15.0
    }


def test_report_eval_command(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["report", "eval", str(CORPUS)])
    assert r.exit_code == 0, r.output
    assert "finding" in r.output and "laterality" in r.output and "obstetric" in r.output
    r = runner.invoke(app, ["report", "eval", str(CORPUS), "--json"])
    assert json.loads(r.stdout)["micro"]["f1"] >= 0.95
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"region": "thyroid", "text": "Nodule.", "f": ["nodule"]}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.jsonl:1: finding 'nodule'"):
        load_corpus(bad)
    r = runner.invoke(
        app, ["report", "eval", str(bad)]
    )  # the CLI's entry point prints UserErrors in one line
    assert r.exit_code != 0 and isinstance(r.exception, DataError) and "bad.jsonl:1" in str(r.exception)
