"""Stratified patient splits: every region and echo view in every split when possible, else said."""

from __future__ import annotations

from collections import Counter

import pytest

from sonofm.sim.generator import patient_region, patient_split
from sonofm.sim.splits import PatientStrata, coverage_note, patients_from_rows, stratified_splits

REGIONS = tuple(f"r{i:02d}" for i in range(10)) + ("heart",)
EXTRA = ("PSAX_AP", "PSAX_MV", "SC4C", "SCIVC")


def _patients(n: int) -> list[PatientStrata]:
    """Patient i has region REGIONS[i % 11] (as the simulator does); heart patients have core views
    plus one extra view in turn."""
    out = []
    for i in range(n):
        region = patient_region(REGIONS, i)
        views = (
            frozenset({"A4C", "PLAX", EXTRA[(i // len(REGIONS)) % len(EXTRA)]})
            if region == "heart"
            else frozenset()
        )
        out.append(PatientStrata(f"p{i}", region, views))
    return out


def _present(patients, split_of, split):
    return {lab for p in patients if split_of[p.patient_id] == split for lab in p.labels}


def test_small_dataset_covers_every_region_and_view_in_every_split():
    # 132 patients (~300 images with a few images per patient): 12 per region; the 12 heart
    # patients have 3 per extra view, exactly enough for one in each split
    patients = _patients(132)
    split_of, missing = stratified_splits(patients, (0.8, 0.1, 0.1), seed=0)
    labels = {lab for p in patients for lab in p.labels}
    assert missing == [] and coverage_note(missing) == ""
    for s in ("train", "val", "test"):
        assert _present(patients, split_of, s) == labels, s
    # the old per-patient draw left regions out of val or test on the same patients
    old = {p.patient_id: patient_split(0, i, (0.8, 0.1, 0.1)) for i, p in enumerate(patients)}
    assert any(_present(patients, old, s) != labels for s in ("val", "test"))


def test_views_too_rare_for_every_split_are_reported():
    patients = _patients(80)  # 7 heart patients: SCIVC has one patient, the other extras two
    split_of, missing = stratified_splits(patients, (0.8, 0.1, 0.1), seed=0)
    regions = {f"region {r}" for r in REGIONS}
    assert not [m for m in missing if m[0] in regions]  # every region is still in every split
    assert ("view SCIVC", "val") in missing and ("view SCIVC", "test") in missing
    assert "view SCIVC" in coverage_note(missing)


def test_fractions_kept_per_region_when_large():
    patients = _patients(2200)
    split_of, missing = stratified_splits(patients, (0.7, 0.2, 0.1), seed=3)
    assert missing == []
    for region in REGIONS:
        c = Counter(split_of[p.patient_id] for p in patients if p.region == region)
        total = sum(c.values())
        for s, want in (("train", 0.7), ("val", 0.2), ("test", 0.1)):
            assert abs(c[s] / total - want) < 0.02, (region, s, c)


def test_too_few_patients_is_reported_and_deterministic():
    patients = [PatientStrata("a", "breast"), PatientStrata("b", "breast"), PatientStrata("c", "liver")]
    got = stratified_splits(patients, (0.8, 0.1, 0.1), seed=1)
    assert got == stratified_splits(patients, (0.8, 0.1, 0.1), seed=1)
    split_of, missing = got
    assert split_of["c"] == "train"  # a lone patient goes to train, where it is needed most
    assert ("region liver", "val") in missing and ("region liver", "test") in missing
    assert ("region breast", "train") not in missing
    note = coverage_note(missing)
    assert "too few patients" in note and "region liver" in note


def test_zero_fraction_split_is_not_required():
    split_of, missing = stratified_splits(_patients(30), (0.9, 0.1, 0.0), seed=0)
    assert "test" not in set(split_of.values()) and all(s != "test" for _, s in missing)


@pytest.mark.parametrize("seed", [0, 1])
def test_patients_from_rows_collects_views(seed):
    rows = [
        {"patient_id": "h", "region": "heart", "view": "A4C"},
        {"patient_id": "h", "region": "heart", "view": "PLAX"},
        {"patient_id": "b", "region": "breast", "view": None},
    ]
    pats = patients_from_rows(rows)
    assert pats[0] == PatientStrata("h", "heart", frozenset({"A4C", "PLAX"}))
    assert pats[1].labels == frozenset({"region breast"})
