"""Patient-level train/val/test splits stratified so every region (and echo view) is in every split.

Why: splits drawn per patient independently of content left whole regions out of val and test
in small datasets (300 images, 11 regions: no breast, thyroid or abdomen test image), so their
zero-shot and probe numbers silently did not exist. Here the split is assigned once all patients
are known, from their regions and echo views:

1. coverage: for every stratum (region, echo view; rarest first) and every split with a
   non-zero fraction, one patient having that stratum is placed there if it has none yet (the
   one covering most still-missing strata of that split, ties in a seeded order), in the order
   of need: train gets every stratum, then val and test every region, then every echo view;
2. proportions: the remaining patients of each region go, in a seeded order, to the split
   furthest below its share of that region (largest deficit), so each region keeps the fractions.

Strata that cannot be in every split (fewer patients than splits) are returned so the caller
can say so. A pure function of (patients, fractions, seed): same input, same splits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class PatientStrata:
    """One patient: its id, region, and the echo views among its images (empty elsewhere)."""

    patient_id: str
    region: str
    views: frozenset[str] = frozenset()

    @property
    def labels(self) -> frozenset[str]:
        return frozenset({f"region {self.region}"} | {f"view {v}" for v in self.views})


def stratified_splits(
    patients: Sequence[PatientStrata], fractions: Sequence[float], seed: int
) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """(patient id -> split, [(stratum, split) pairs that no patient could cover])."""
    fr = dict(zip(SPLIT_NAMES, (float(f) for f in fractions), strict=True))
    active = [s for s in SPLIT_NAMES if fr[s] > 0]  # train first: it needs every stratum most
    rng = np.random.default_rng([int(seed), 0x53545241])
    order = [patients[i] for i in rng.permutation(len(patients))]
    split_of: dict[str, str] = {}
    covered: dict[str, set[str]] = {s: set() for s in active}
    # rarest strata first: a view seen in one patient must not lose it to a region's coverage
    n_with = {}
    for p in patients:
        for lab in p.labels:
            n_with[lab] = n_with.get(lab, 0) + 1
    strata = sorted(n_with, key=lambda lab: (n_with[lab], lab))

    def assign(p: PatientStrata, s: str) -> None:
        split_of[p.patient_id] = s
        covered[s] |= p.labels

    # train gets every stratum first (rarest first), then val/test get every region, then views
    regions = [lab for lab in strata if lab.startswith("region ")]
    views = [lab for lab in strata if not lab.startswith("region ")]
    rest = [s for s in active if s != "train"]
    passes = [(strata, active[:1] if active[:1] == ["train"] else []), (regions, rest), (views, rest)]
    for labels, splits in passes:
        for lab in labels:
            for s in splits:
                if lab in covered[s]:
                    continue
                free = [p for p in order if p.patient_id not in split_of and lab in p.labels]
                if free:
                    assign(max(free, key=lambda p: len(p.labels - covered[s])), s)
    # the rest, per region, to the split furthest below its share of that region
    for region in sorted({p.region for p in patients}):
        members = [p for p in order if p.region == region]
        counts = {s: sum(1 for p in members if split_of.get(p.patient_id) == s) for s in active}
        for p in members:
            if p.patient_id in split_of:
                continue
            done = sum(counts.values())
            s = max(active, key=lambda s: (fr[s] * (done + 1) - counts[s], fr[s]))
            counts[s] += 1
            split_of[p.patient_id] = s
    present = {s: covered_after(patients, split_of, s) for s in active}
    return split_of, [(lab, s) for lab in sorted(strata) for s in active if lab not in present[s]]


def covered_after(patients: Sequence[PatientStrata], split_of: dict[str, str], split: str) -> set[str]:
    """Strata present in `split` under the assignment `split_of`."""
    return {lab for p in patients if split_of.get(p.patient_id) == split for lab in p.labels}


def patients_from_rows(rows: Sequence[dict]) -> list[PatientStrata]:
    """PatientStrata of manifest rows (dicts with patient_id, region, view), in first-seen order."""
    regions: dict[str, str] = {}
    views: dict[str, set[str]] = {}
    for r in rows:
        pid = str(r["patient_id"])
        regions.setdefault(pid, str(r.get("region")))
        if r.get("view"):
            views.setdefault(pid, set()).add(str(r["view"]))
        else:
            views.setdefault(pid, set())
    return [PatientStrata(pid, regions[pid], frozenset(views[pid])) for pid in regions]


def coverage_note(missing: Sequence[tuple[str, str]]) -> str:
    """One sentence on which strata could not be in every split (empty string if all are)."""
    if not missing:
        return ""
    by_split: dict[str, list[str]] = {}
    for lab, s in missing:
        by_split.setdefault(s, []).append(lab)
    parts = "; ".join(f"{s}: no {', '.join(labs)}" for s, labs in by_split.items())
    return (
        f"too few patients to put every region and echo view in every split ({parts}); "
        "simulate more images to cover them"
    )
