"""Few-shot fractions are drawn per patient, deterministically, keeping every class represented."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sonofm.errors import UserError
from sonofm.finetune.fewshot import fewshot_subset, missing_classes, n_patients_for, sample_patients


def _rows(n_patients: int = 50, seed: int = 0) -> pd.DataFrame:
    """1-6 images per patient; one class per patient, class 'rare' held by a single patient."""
    rng = np.random.default_rng(seed)
    recs = []
    for p in range(n_patients):
        label = "rare" if p == 37 else ["a", "b", "c"][p % 3]
        for k in range(int(rng.integers(1, 7))):
            recs.append({"id": f"p{p:03d}-{k}", "patient_id": f"p{p:03d}", "label": label})
    return pd.DataFrame(recs)


@pytest.mark.parametrize("fraction", [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0])
def test_fraction_is_of_patients_and_never_splits_one(fraction: float) -> None:
    df = _rows()
    sub = fewshot_subset(df, fraction, seed=3)
    kept = set(sub["patient_id"])
    assert abs(len(kept) - fraction * 50) <= 0.5 + 1e-9 or len(kept) == 1  # round(), at least one
    assert len(kept) == n_patients_for(fraction, 50)
    # every image of a kept patient is in, none of a dropped one
    for pid, group in df.groupby("patient_id"):
        inside = sub["patient_id"] == pid
        assert inside.sum() in (0, len(group))
        assert (inside.sum() == len(group)) == (pid in kept)


def test_same_seed_same_sample_other_seed_other_sample() -> None:
    df = _rows()
    a = sample_patients(df, 0.2, seed=7)
    assert a == sample_patients(df, 0.2, seed=7)
    assert a == sample_patients(df.sample(frac=1.0, random_state=1), 0.2, seed=7)  # row order irrelevant
    assert a != sample_patients(df, 0.2, seed=8)


def test_every_class_kept_when_the_budget_allows() -> None:
    df = _rows()
    strata = df["label"]
    for seed in range(20):
        kept = sample_patients(df, 0.1, seed, strata)  # 5 patients, 4 classes
        assert len(kept) == 5
        labels = set(df[df["patient_id"].isin(kept)]["label"])
        assert labels == {"a", "b", "c", "rare"}
    # budget (2 patients) smaller than the number of classes (4): every class still, 4 patients
    for seed in range(5):
        kept = sample_patients(df, 0.04, seed, strata)
        assert len(kept) == 4 and set(df[df["patient_id"].isin(kept)]["label"]) == {"a", "b", "c", "rare"}


def _echo_rows(n_patients: int = 60) -> pd.DataFrame:
    """Echo exams: every patient has the core views, 0-2 of five extra views (as the simulator)."""
    rng = np.random.default_rng(0)
    extra = ["PSAX_AP", "PSAX_MV", "PSAX_PM", "SC4C", "SCIVC"]
    recs = []
    for p in range(n_patients):
        views = ["A4C", "A2C", "PLAX"] + list(rng.choice(extra, size=int(rng.integers(0, 3)), replace=False))
        recs += [{"id": f"p{p}-{v}", "patient_id": f"p{p:03d}", "view": v} for v in views]
    return pd.DataFrame(recs)


@pytest.mark.parametrize("fraction", [0.02, 0.05, 0.1])
def test_every_view_in_every_seed_of_an_echo_fewshot(fraction: float) -> None:
    """`--fraction 0.1 --seeds 1,2` gave seed 1 no PSAX_AP and seed 2 no PSAX_MV."""
    df = _echo_rows()
    classes = set(df["view"])
    for seed in (1, 2, 3, 4):
        kept = sample_patients(df, fraction, seed, df["view"])
        assert set(df[df["patient_id"].isin(kept)]["view"]) == classes, seed
        assert missing_classes(df, kept, df["view"]) == []
        assert len(kept) >= n_patients_for(fraction, 60)
    # few patients beyond the budget: a greedy cover, not one patient per class
    assert len(sample_patients(df, 0.02, 1, df["view"])) <= 5


def test_missing_classes_names_what_a_subset_lacks() -> None:
    df = _echo_rows()
    one = sorted(set(df["patient_id"]))[:1]
    lacking = missing_classes(df, one, df["view"])
    have = set(df[df["patient_id"].isin(one)]["view"])
    assert set(lacking) == set(df["view"]) - have and lacking == sorted(lacking)


def test_bad_fraction_and_missing_column() -> None:
    df = _rows()
    with pytest.raises(UserError, match="fraction"):
        fewshot_subset(df, 0.0, 0)
    with pytest.raises(UserError, match="fraction"):
        sample_patients(df, 1.5, 0)
    with pytest.raises(UserError, match="patient_id"):
        sample_patients(df.drop(columns="patient_id"), 0.5, 0)
