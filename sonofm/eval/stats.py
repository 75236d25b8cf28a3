"""Patient-level statistics: bootstrap CIs, paired tests and multiple-testing corrections.

Why a module of its own: every score sonofm reports (eval suite, demo, fine-tuning seeds, the
ablation benchmark) must rest on the same rules, and those rules are about patients, not images.
Images of one patient are near-duplicates, so resampling images makes intervals too narrow and
p-values too small (one echo exam gave "p = 0.010"). Here:

- `patient_bootstrap_ci` resamples whole patients and says how many it rests on;
- `paired_patient_test` compares two models on the same patients, and below `MIN_PATIENTS`
  patients it makes no claim (p = NaN, with the reason);
- `adjust_pvalues` (Holm, Benjamini-Hochberg) reconciles many tests at once, and
  `count_significant` reports raw and corrected counts side by side.

Several seeds of one model (fine-tuning seeds, ablation repeats) scored on the same test
patients: stack each seed's rows and repeat the patient ids per seed, so each resampled patient
brings all its seeds' rows along (the seed spread and the patient spread are both in the CI).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from sonofm.eval.metrics import CI, MIN_PATIENTS, bootstrap_ci, paired_bootstrap

__all__ = [
    "MIN_PATIENTS",
    "CORRECTIONS",
    "patient_bootstrap_ci",
    "paired_patient_test",
    "holm",
    "benjamini_hochberg",
    "adjust_pvalues",
    "count_significant",
]

CORRECTIONS = ("holm", "bh")


def _patients(patients: Sequence[Any] | np.ndarray, n: int) -> np.ndarray:
    ids = np.asarray(patients)
    if ids.ndim != 1 or len(ids) != n:
        raise ValueError(f"patients must be one id per row ({n} rows), got shape {ids.shape}")
    return ids


def patient_bootstrap_ci(
    fn: Callable[..., float],
    *arrays: np.ndarray,
    patients: Sequence[Any] | np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> CI:
    """`fn(*arrays)` with a (1 - alpha) bias-corrected CI from resampling whole patients.

    arrays: per-row inputs of `fn` (e.g. y_true, probs), resampled jointly; patients: the row's
    patient id. Returns a `CI` with `n` rows and `n_patients`; one patient gives NaN bounds.
    """
    n = len(np.asarray(arrays[0]))
    return bootstrap_ci(fn, *arrays, n_boot=n_boot, seed=seed, alpha=alpha, groups=_patients(patients, n))


def paired_patient_test(
    fn: Callable[..., float],
    arrays_a: Sequence[np.ndarray],
    arrays_b: Sequence[np.ndarray],
    *,
    patients: Sequence[Any] | np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    min_patients: int = MIN_PATIENTS,
) -> dict[str, Any]:
    """Two-sided paired bootstrap of metric(A) - metric(B) over the same patients.

    Returns {a, b, delta (A - B), p_value, n, n_patients, n_boot} and, below `min_patients`
    patients, `untestable` (a reason) with p_value NaN: nothing may be called significant then.
    """
    n = len(np.asarray(arrays_a[0]))
    return paired_bootstrap(
        fn,
        arrays_a,
        arrays_b,
        n_boot=n_boot,
        seed=seed,
        groups=_patients(patients, n),
        min_patients=min_patients,
    )


def holm(pvals: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error control); NaN entries stay NaN."""
    p = np.asarray(pvals, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    if not m:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adj, 1.0)
    return out


def benjamini_hochberg(pvals: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false-discovery-rate control); NaN entries stay NaN."""
    p = np.asarray(pvals, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    if not m:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    raw = p[order] * m / np.arange(1, m + 1)
    adj = np.minimum.accumulate(raw[::-1])[::-1]
    out[order] = np.minimum(adj, 1.0)
    return out


def adjust_pvalues(pvals: Sequence[float] | np.ndarray, method: str = "holm") -> np.ndarray:
    """Adjusted p-values by `method` ("holm" or "bh")."""
    if method == "holm":
        return holm(pvals)
    if method == "bh":
        return benjamini_hochberg(pvals)
    raise ValueError(f"unknown correction {method!r}; expected one of {CORRECTIONS}")


def count_significant(pvals: Sequence[float | None], alpha: float = 0.05) -> dict[str, int]:
    """How many tests are significant raw, after Holm and after Benjamini-Hochberg (and of how many)."""
    p = np.array([np.nan if v is None else float(v) for v in pvals], dtype=np.float64)
    tested = int((~np.isnan(p)).sum())
    return {
        "tests": tested,
        "raw": int(np.sum(p < alpha)),
        "holm": int(np.sum(holm(p) < alpha)),
        "bh": int(np.sum(benjamini_hochberg(p) < alpha)),
    }
