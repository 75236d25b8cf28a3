"""Few-shot label fractions, sampled per patient.

Images of one patient are near-duplicates (the same lesion from other angles, the views of one
echo exam), so a "10% of the labels" experiment must draw 10% of the *patients*: sampling
images would leak each selected patient's other images into the test of how little data is
needed, and would overstate few-shot performance. The draw is a pure function of
(rows, fraction, seed), so every adapter compared at one fraction and seed sees the same
patients, and when the task has classes every class is held by a kept patient in every seed,
above the budget if need be, so seeds are comparable (the NextGen-UIA few-shot protocol at
1/2/5/10/20/50%).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from sonofm.errors import UserError

log = logging.getLogger(__name__)


def n_patients_for(fraction: float, n_patients: int) -> int:
    """Patients a fraction keeps: round(fraction * n), at least one."""
    if not 0.0 < fraction <= 1.0:
        raise UserError(f"fraction must be in (0, 1], got {fraction}")
    return min(n_patients, max(1, int(round(fraction * n_patients))))


def _classes_by_patient(df: pd.DataFrame, strata: pd.Series) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for pid, label in zip(df["patient_id"].astype(str), strata, strict=True):
        if label is not None and label == label:  # skip None / NaN
            out.setdefault(pid, set()).add(str(label))
    return out


def cover_classes(classes_of: dict[str, set[str]], order: list[str]) -> list[str]:
    """Few patients that together hold every class: rarest class first, then the patient (in
    `order`, the seeded patient order) holding most still-missing classes.

    Why not one patient per class in a random class order under the budget: with more classes
    than the budget allows (echo views at 10%), each seed then lacked other classes (seed 1 no
    PSAX_AP, seed 2 no PSAX_MV), so seeds were not comparable and unseen classes counted as errors.
    """
    holders: dict[str, list[str]] = {}
    for pid in order:
        for c in classes_of.get(pid, ()):
            holders.setdefault(c, []).append(pid)
    missing = set(holders)
    chosen: list[str] = []
    while missing:
        rarest = min(missing, key=lambda c: (len(holders[c]), c))
        best = max(holders[rarest], key=lambda p: len(classes_of[p] & missing))  # first in order on ties
        chosen.append(best)
        missing -= classes_of[best]
    return chosen


def sample_patients(
    df: pd.DataFrame, fraction: float, seed: int, strata: pd.Series | None = None
) -> list[str]:
    """Patient ids kept at `fraction` (sorted); `strata` gives each row's class (None = unlabelled).

    With strata, every class of `df` is held by at least one kept patient in every seed, even when
    that takes more patients than the fraction's budget (the excess is logged); the rest of the
    budget is filled in the seeded patient order.
    """
    if "patient_id" not in df.columns:
        raise UserError("few-shot sampling needs a 'patient_id' column in the manifest")
    patients = sorted({str(p) for p in df["patient_id"]})
    if not patients:
        return []
    n = n_patients_for(fraction, len(patients))
    if n == len(patients):
        return patients
    rng = np.random.default_rng(seed)
    order = [patients[i] for i in rng.permutation(len(patients))]
    chosen: list[str] = []
    if strata is not None:
        classes_of = _classes_by_patient(df, strata)
        chosen = cover_classes(classes_of, order)
        if len(chosen) > n:
            n_classes = len(set().union(*classes_of.values()))
            log.warning(
                "few-shot %.3g (seed %d): %d patients are needed to hold all %d classes, above the "
                "budget of %d; keeping them all so every seed sees every class",
                fraction,
                seed,
                len(chosen),
                n_classes,
                n,
            )
    taken = set(chosen)
    rest = [p for p in order if p not in taken]
    chosen += rest[: max(0, n - len(chosen))]
    return sorted(chosen)


def missing_classes(df: pd.DataFrame, kept: set[str] | list[str], strata: pd.Series) -> list[str]:
    """Classes of `df` (`strata`: one class per row, in df's row order) held by no kept patient."""
    inside = df["patient_id"].astype(str).isin({str(p) for p in kept}).to_numpy()
    labels = [str(v) if v is not None and v == v else None for v in strata]
    have = {v for v, k in zip(labels, inside, strict=True) if k and v is not None}
    return sorted({v for v in labels if v is not None} - have)


def fewshot_subset(
    df: pd.DataFrame, fraction: float, seed: int, strata: pd.Series | None = None
) -> pd.DataFrame:
    """Rows of the patients `sample_patients` keeps (all images of each kept patient)."""
    if fraction >= 1.0:
        return df
    keep = set(sample_patients(df, fraction, seed, strata))
    out = df[df["patient_id"].astype(str).isin(keep)]
    lacking = missing_classes(df, keep, strata) if strata is not None else []
    if lacking:  # only when no patient of df holds them together with the rest: should not happen
        log.warning("few-shot %.3g (seed %d): no patient of classes %s", fraction, seed, lacking)
    log.info(
        "few-shot %.3g (seed %d): %d of %d patients, %d of %d images",
        fraction,
        seed,
        len(keep),
        df["patient_id"].nunique(),
        len(out),
        len(df),
    )
    return out
