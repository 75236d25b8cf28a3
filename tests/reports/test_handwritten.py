"""The parser on sonographer-style snippets (abbreviations, run-ons, lists), each fully specified."""

from __future__ import annotations

import pytest

from sonofm.reports import Status, parse_report
from tests.reports.handwritten_cases import CASES


def _by_status(study, status):
    return {(f.dimension, f.tag) for f in study.findings if f.status is status}


def test_enough_cases():
    assert len(CASES) >= 30


@pytest.mark.parametrize(("text", "region", "exp"), CASES, ids=[c[0][:40] for c in CASES])
def test_handwritten(text, region, exp):
    r = parse_report(text, region=region)
    st = r.study
    assert _by_status(st, Status.PRESENT) == exp.get("present", set()), r.to_dict()
    assert _by_status(st, Status.ABSENT) == exp.get("absent", set()), r.to_dict()
    assert _by_status(st, Status.UNCERTAIN) == exp.get("uncertain", set()), r.to_dict()
    grades = {f.key(): f.grade for f in st.findings if f.grade is not None}
    assert grades == exp.get("grades", {}), grades
    got_m = st.measurements
    want_m = exp.get("measurements", {})
    assert set(got_m) == set(want_m), got_m
    for k, v in want_m.items():
        assert got_m[k] == pytest.approx(v, abs=1e-6), (k, got_m[k])
    for key in ("organ", "view", "frame", "sex"):
        if key in exp:
            assert getattr(st, key) == exp[key], (key, getattr(st, key))
    if "assessment" in exp:
        assert st.assessment == exp["assessment"]
    for u in exp.get("unknown", []):
        assert any(u.lower() in t.lower() for t in r.unknown_terms), (u, r.unknown_terms)
