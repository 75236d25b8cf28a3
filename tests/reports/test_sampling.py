"""Random studies are realistic: attributes follow the diagnosis, echo findings follow the guidelines."""

from __future__ import annotations

import numpy as np
import pytest

from sonofm import taxonomy as tx
from sonofm.reports import Status
from sonofm.reports.sampling import all_organs, random_study


def test_covers_every_region_and_is_deterministic():
    a = [random_study(np.random.default_rng(4), r).to_dict() for r in tx.REGIONS]
    b = [random_study(np.random.default_rng(4), r).to_dict() for r in tx.REGIONS]
    assert a == b
    rng = np.random.default_rng(0)
    seen = {random_study(rng).organ for _ in range(600)}
    assert seen == set(all_organs())
    with pytest.raises(ValueError, match="region"):
        random_study(rng, "elbow")


def test_simple_cysts_are_consistent():
    rng = np.random.default_rng(1)
    for _ in range(400):
        st = random_study(rng, "kidney")
        pres = {(f.dimension, f.tag) for f in st.present()}
        if ("diagnosis", "cyst") in pres and not any(d == "internal" and t != "cystic" for d, t in pres):
            assert not pres & {
                ("echogenicity", "hypoechoic"),
                ("posterior", "shadowing"),
                ("vascularity", "internal"),
                ("vascularity", "hypervascular"),
            }
        if ("diagnosis", "normal") not in pres:
            assert "lesion_width_mm" in st.measurements
        neg_present = {(f.dimension, f.tag) for f in st.absent()} & pres
        assert not neg_present  # never both present and absent


def test_echo_findings_follow_guidelines():
    rng = np.random.default_rng(2)
    crossed = set()
    for _ in range(300):
        st = random_study(rng, "heart")
        assert st.view in tx.ECHO_VIEWS and st.frame in tx.FRAMES and st.sex in ("F", "M")
        derived = {(r.finding, r.present, r.grade) for r in tx.evaluate_guidelines(st.measurements, st.sex)}
        stated = {
            (f.tag, f.status is Status.PRESENT, f.grade)
            for f in st.findings
            if f.dimension == "echo" and (f.tag != "pericardial_effusion" or "pe_size_mm" in st.measurements)
        }
        assert stated == derived
        crossed |= {(f, p) for f, p, _ in derived}
        crossed |= {(f.tag, False) for f in st.absent() if f.tag == "pericardial_effusion"}
    # measurements land on both sides of every cut-off (an absent effusion is stated without a size)
    assert crossed == {(f, p) for f in tx.ECHO_FINDINGS for p in (True, False)}


def test_thyroid_and_breast_carry_risk_categories():
    rng = np.random.default_rng(3)
    for region, key in (("thyroid", "TI-RADS"), ("breast", "BI-RADS")):
        cats = set()
        for _ in range(200):
            st = random_study(rng, region)
            if st.present("diagnosis") and st.present("diagnosis")[0].tag != "normal":
                cats.add(st.assessment[key])
        assert len(cats) >= 3, (region, cats)
