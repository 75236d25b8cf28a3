"""Every taxonomy tag and echo finding can be written and read back, in every status and grade.

Studies here are built by hand (not by the sampler), as the simulator builds them, so a tag the
sampler never draws still has to survive the writer -> parser round trip.
"""

from __future__ import annotations

import pytest

from sonofm import taxonomy as tx
from sonofm.reports import Finding, Status, Study, parse_report, write_report

_DESCRIPTOR_DIMS = ("shape", "margin", "echogenicity", "internal", "posterior", "vascularity")
_CASES = [(d, t.id) for d in _DESCRIPTOR_DIMS for t in tx.tags(d)]


@pytest.mark.parametrize(("dim", "tag"), _CASES, ids=[f"{d}:{t}" for d, t in _CASES])
@pytest.mark.parametrize("status", list(Status))
def test_every_tag_round_trips(dim, tag, status):
    organ = "thyroid"
    for seed in range(6):
        st = Study(
            region=tx.region_of(organ),
            organ=organ,
            findings=[Finding("diagnosis", "nodule"), Finding(dim, tag, status)],
            measurements={"lesion_width_mm": 11.0, "lesion_height_mm": 7.0},
        )
        text = write_report(st, seed)
        got = {(f.dimension, f.tag, f.status) for f in parse_report(text).study.findings}
        assert (dim, tag, status) in got, text
        assert ("diagnosis", "nodule", Status.PRESENT) in got, text


@pytest.mark.parametrize("diagnosis", [t.id for t in tx.tags("diagnosis")])
@pytest.mark.parametrize("organ", [o.id for o in tx.ORGANS if o.id != "heart"])
def test_every_diagnosis_in_every_organ(diagnosis, organ):
    findings = [Finding("diagnosis", diagnosis)]
    if diagnosis == "normal":
        findings.append(Finding("diagnosis", "nodule", Status.ABSENT))  # the simulator's "no nodule"
    st = Study(region=tx.region_of(organ), organ=organ, findings=findings)
    for seed in range(3):
        text = write_report(st, seed)
        p = parse_report(text).study
        assert p.organ == organ, text
        assert {(f.dimension, f.tag, f.status) for f in p.findings} == {
            (f.dimension, f.tag, f.status) for f in findings
        }, text


_ECHO = [(f, g) for f, d in tx.ECHO_FINDINGS.items() for g in (d.grades or (None,))]


@pytest.mark.parametrize(("finding", "grade"), _ECHO)
def test_every_echo_finding_and_grade(finding, grade):
    for seed in range(4):
        st = Study(
            region="heart",
            organ="heart",
            view="PLAX",
            frame="ES",
            sex="F",
            findings=[Finding("echo", finding, Status.PRESENT, grade)],
        )
        p = parse_report(write_report(st, seed)).study
        assert ("echo", finding, Status.PRESENT, grade) in {
            (f.dimension, f.tag, f.status, f.grade) for f in p.findings
        }
        st.findings = [Finding("echo", finding, Status.ABSENT)]
        p = parse_report(write_report(st, seed)).study
        assert ("echo", finding, Status.ABSENT) in {(f.dimension, f.tag, f.status) for f in p.findings}


@pytest.mark.parametrize("mid", sorted(tx.MEASUREMENTS))
def test_every_measurement(mid):
    m = tx.MEASUREMENTS[mid]
    value = round(max(m.normal_range("M") or (12.0, 12.0)) or 12.0, m.decimals)
    if mid.startswith("lesion_"):
        dims = {"lesion_width_mm": 14.0, "lesion_height_mm": 9.0, "lesion_length_mm": 12.0}
        st = Study(region="liver", organ="liver", findings=[Finding("diagnosis", "cyst")], measurements=dims)
        want = dims
    elif mid in ("imt_mm", "kidney_length_mm"):
        organ = "carotid_artery" if mid == "imt_mm" else "kidney"
        st = Study(
            region=tx.region_of(organ),
            organ=organ,
            findings=[Finding("diagnosis", "normal")],
            measurements={mid: value},
        )
        want = {mid: value}
    else:
        st = Study(region="heart", organ="heart", view="A4C", frame="ED", measurements={mid: value or 3.0})
        want = dict(st.measurements)
    for seed in range(5):
        got = parse_report(write_report(st, seed)).study.measurements
        assert got == pytest.approx(want), (mid, write_report(st, seed))
