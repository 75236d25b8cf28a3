"""Simulated studies and their reports never contradict themselves (issue #22).

The checker is tested on the contradictions the issue found, then run over reports of
`random_study` (every region; 10,000 under `make test-slow`, 1,100 by default) and lesions of the
simulator's catalogues (reports only: the lesion spec's tags, no image rendering).
"""

from __future__ import annotations

import collections

import numpy as np
import pytest

from sonofm import taxonomy as tx
from sonofm.reports import Finding, Status, Study, random_study, write_report
from sonofm.reports.consistency import check, study_problems, wording_problems
from sonofm.sim import phantoms
from sonofm.sim.phantoms import lesions


def _study(organ: str, *tags: tuple[str, str], absent: tuple[tuple[str, str], ...] = ()) -> Study:
    return Study(
        region=tx.region_of(organ),
        organ=organ,
        findings=[Finding(d, t) for d, t in tags] + [Finding(d, t, Status.ABSENT) for d, t in absent],
    )


def test_catches_the_contradictions_the_issue_found():
    cyst = _study("kidney", ("diagnosis", "cyst"), ("echogenicity", "anechoic"), ("internal", "septations"))
    text = "An an-echoic purely cystic cyst in the kidney. It demonstrates septations."
    assert [p.kind for p in wording_problems(cyst, text)] == ["wording"]
    stone = _study("kidney", ("diagnosis", "calculus"))
    problems = check(stone, "Renal parenchyma: a spherical bladder stone.")
    assert any("bladder stone" in str(p) for p in problems)
    seroma = _study("pancreas", ("diagnosis", "fluid_collection"))
    assert any("seroma" in str(p) for p in check(seroma, "A seroma is seen in the pancreatic body."))
    assert study_problems(_study("thyroid", ("diagnosis", "calculus")))[0].kind == "diagnosis"


def test_catches_exclusive_tags_and_conflicts():
    both = _study("breast", ("margin", "circumscribed"), ("margin", "spiculated"))
    assert [p.kind for p in study_problems(both)] == ["conflict"]
    two = _study("liver", ("echogenicity", "hypoechoic"), ("echogenicity", "hyperechoic"))
    assert [p.kind for p in study_problems(two)] == ["exclusive"]
    debris = _study("liver", ("echogenicity", "anechoic"), ("internal", "debris"))
    assert [p.kind for p in study_problems(debris)] == ["conflict"]
    wrong_region = Study(region="thyroid", organ="liver")
    assert [p.kind for p in study_problems(wrong_region)] == ["organ"]


def test_round_trip_flags_a_status_the_text_contradicts():
    st = _study("thyroid", ("diagnosis", "nodule"), absent=(("posterior", "shadowing"),))
    assert check(st, "Thyroid: nodule. No shadowing.") == []
    assert [p.kind for p in check(st, "Thyroid: nodule with posterior shadowing.")] == ["status"]
    assert [p.kind for p in check(st, "Thyroid: nodule.")] == ["missing"]


def _problems(pairs) -> collections.Counter:
    out: collections.Counter = collections.Counter()
    for study, text in pairs:
        for p in check(study, text):
            out[f"{study.organ}: {p}"] += 1
    return out


def _random_pairs(n: int, seed: int) -> list[tuple[Study, str]]:
    rng = np.random.default_rng(seed)
    pairs = []
    for region in tx.REGIONS:
        for _ in range(-(-n // len(tx.REGIONS))):
            st = random_study(rng, region)
            pairs.append((st, write_report(st, rng)))
    return pairs


def test_simulated_reports_have_no_contradictions():
    bad = _problems(_random_pairs(1_100, 11))
    assert not bad, bad.most_common(10)


@pytest.mark.slow
def test_ten_thousand_simulated_reports_have_no_contradictions():
    """The issue's bar: 10,000 reports over every region (~1-2 min on 2 cores: `make test-slow`)."""
    pairs = _random_pairs(10_000, 2026)
    assert len(pairs) >= 10_000
    bad = _problems(pairs)
    assert not bad, bad.most_common(10)


def _catalogues() -> list[lesions.OrganCatalogue]:
    out = []
    for mod in (getattr(phantoms, n) for n in phantoms.__all__):
        out += [v for v in vars(mod).values() if isinstance(v, lesions.OrganCatalogue) and v.kinds]
    return out


@pytest.mark.parametrize("n", [660, pytest.param(2_200, marks=pytest.mark.slow)])
def test_simulator_lesion_catalogue_reports_have_no_contradictions(n):
    cats = _catalogues()
    assert {c.organ for c in cats} >= {"kidney", "bladder", "gallbladder", "pancreas", "breast", "thyroid"}
    rng = np.random.default_rng(7)
    pairs = []
    for cat in cats:
        for _ in range(-(-n // len(cats))):
            spec = lesions.sample_lesion(rng, cat)
            aw, _al, ah = spec.semi_axes_mm
            st = Study(
                region=tx.region_of(cat.organ),
                organ=cat.organ,
                findings=lesions.findings_from_tags(spec.nominal_attributes()),
                measurements={"lesion_width_mm": round(2 * aw, 1), "lesion_height_mm": round(2 * ah, 1)},
            )
            pairs.append((st, write_report(st, rng)))
    bad = _problems(pairs)
    assert not bad, bad.most_common(10)
