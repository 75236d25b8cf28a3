"""Prompt ensembles, positive/negated pairs, hard-negative captions, the refiner."""

from __future__ import annotations

import numpy as np
import pytest

from sonofm import taxonomy as tx
from sonofm.reports import parse_report
from sonofm.reports.prompts import (
    TEMPLATES,
    all_prompt_pairs,
    attribute_prompts,
    diagnosis_prompts,
    negated_captions,
    negated_studies,
    organ_prompts,
    prompt_pair,
    refine_class_name,
    view_prompts,
)
from sonofm.reports.sampling import random_study


def test_ensembles_have_at_least_8_templates():
    assert len(TEMPLATES) >= 8
    for dim in tx.DIMENSIONS:
        for t in tx.tags(dim):
            for organ in (None, "thyroid"):
                prompts = attribute_prompts(dim, t.id, organ)
                assert len(set(prompts)) >= 8, (dim, t.id, organ)
    for d in tx.tags("diagnosis"):
        assert len(set(diagnosis_prompts(d.id, "liver"))) >= 8
    for o in tx.ORGANS:
        assert len(set(organ_prompts(o.id))) >= 8
    for v in tx.ECHO_VIEWS:
        assert len(set(view_prompts(v))) >= 8


def test_prompt_pairs_parse_to_opposite_polarity():
    pairs = all_prompt_pairs()
    assert {k for k in pairs if k[0] == "echo"} == {("echo", f) for f in tx.ECHO_FINDINGS}
    for (dim, tag), pair in pairs.items():
        assert len(pair.positive) >= 8 and len(pair.negative) >= 8
        pos = parse_report(pair.positive[0]).study.findings
        neg = parse_report(pair.negative[0]).study.findings
        assert (dim, tag, "present") in {(f.dimension, f.tag, f.status.value) for f in pos}, pair.positive[0]
        assert (dim, tag, "absent") in {(f.dimension, f.tag, f.status.value) for f in neg}, pair.negative[0]


def test_echo_pair_is_measurement_grounded():
    p = prompt_pair("echo", "reduced_lvef")
    assert "LVEF is reduced." in p.positive and "LVEF is normal." in p.negative
    assert any("50" in s for s in p.positive)


def _facts(text, region):
    st = parse_report(text, region=region).study
    sides = {(r.finding, r.present) for r in tx.evaluate_guidelines(st.measurements, st.sex)}
    return {(f.dimension, f.tag, f.status.value, f.grade) for f in st.findings}, sides


@pytest.mark.parametrize("region", ["heart", "thyroid", "breast", "kidney", "gynaecology", "liver"])
def test_negated_captions_change_meaning(region):
    rng = np.random.default_rng(11)
    made = 0
    for _ in range(15):
        study = random_study(rng, region)
        orig = _facts(__import__("sonofm.reports", fromlist=["write_report"]).write_report(study, 0), region)
        negs = negated_captions(study, rng, k=3)
        for text in negs:
            assert _facts(text, region) != orig, text
        made += len(negs)
    assert made >= 15  # most studies yield hard negatives (normal organs have nothing to flip)


def test_negated_echo_moves_a_threshold():
    rng = np.random.default_rng(5)
    study = random_study(rng, "heart")
    base = {(r.finding, r.present) for r in tx.evaluate_guidelines(study.measurements, study.sex)}
    moved = [s for s in negated_studies(study, rng, k=6) if s.measurements != study.measurements]
    assert moved
    for s in moved:
        sides = {(r.finding, r.present) for r in tx.evaluate_guidelines(s.measurements, s.sex)}
        assert sides != base


def test_negated_captions_deterministic():
    study = random_study(np.random.default_rng(3), "heart")
    assert negated_captions(study, 9, 3) == negated_captions(study, 9, 3)


def test_refiner_uses_taxonomy_definitions():
    hypo = refine_class_name("hypoechoic")
    assert any(tx.get_tag("echogenicity", "hypoechoic").definition in s for s in hypo)
    assert len(refine_class_name("spiculated margins")) >= 3
    lvef = refine_class_name("reduced_lvef")
    assert any("50" in s for s in lvef)
    assert any(tx.get_organ("thyroid").definition in s for s in refine_class_name("thyroid"))
    assert refine_class_name("A4C")
    assert refine_class_name("zebra stripes") == ["An ultrasound image showing zebra stripes."]
