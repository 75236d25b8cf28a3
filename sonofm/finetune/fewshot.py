"""Few-shot label fractions, sampled per patient.

Images of one patient are near-duplicates (the same lesion from other angles, the views of one
echo exam), so a "10% of the labels" experiment must draw 10% of the *patients*: sampling
images would leak each selected patient's other images into the test of how little data is
needed, and would overstate few-shot performance. The draw is a pure function of
(rows, fraction, seed), so every adapter compared at one fraction and seed sees the same
patients, and when the task has classes at least one patient of every class is included when
the patient budget allows (the NextGen-UIA few-shot protocol at 1/2/5/10/20/50%).
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


def sample_patients(
    df: pd.DataFrame, fraction: float, seed: int, strata: pd.Series | None = None
) -> list[str]:
    """Patient ids kept at `fraction` (sorted); `strata` gives each row's class (None = unlabelled)."""
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
        # One patient per class first (classes in a seeded random order, so that when the budget
        # is smaller than the number of classes no class is systematically favoured).
        by_class: dict[str, set[str]] = {}
        for pid, label in zip(df["patient_id"].astype(str), strata, strict=True):
            if label is not None and label == label:  # skip None / NaN
                by_class.setdefault(str(label), set()).add(pid)
        classes = sorted(by_class)
        for ci in rng.permutation(len(classes)):
            if len(chosen) >= n:
                break
            members = by_class[classes[ci]]
            if members & set(chosen):
                continue
            chosen.append(next(p for p in order if p in members))
    rest = [p for p in order if p not in set(chosen)]
    chosen += rest[: n - len(chosen)]
    return sorted(chosen)


def fewshot_subset(
    df: pd.DataFrame, fraction: float, seed: int, strata: pd.Series | None = None
) -> pd.DataFrame:
    """Rows of the patients `sample_patients` keeps (all images of each kept patient)."""
    if fraction >= 1.0:
        return df
    keep = set(sample_patients(df, fraction, seed, strata))
    out = df[df["patient_id"].astype(str).isin(keep)]
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
