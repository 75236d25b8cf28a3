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
patients: `PatientPool` holds each seed's rows with their patient ids, so each resampled patient
brings all its seeds' rows along; its statistic is the mean over seeds of each seed's metric on
its rows of the drawn patients (for a mean metric such as accuracy on equal test sets, the metric
of the stacked rows). The CI is over test patients for these seeds (seeds are not resampled), so
reports list the per-seed values beside it. The same pool
averages the members of a metric family (e.g. per-attribute AUCs) under one resampling.
`pooled_ci` and `paired_pooled_test` give its CI and the paired test of two pools (e.g. one
objective vs the baseline, seed by seed); below `MIN_PATIENTS` patients they claim nothing.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from sonofm.stats.metrics import CI, MIN_PATIENTS, MetricWarning, bootstrap_ci, paired_bootstrap

__all__ = [
    "MIN_PATIENTS",
    "CORRECTIONS",
    "patient_bootstrap_ci",
    "paired_patient_test",
    "holm",
    "benjamini_hochberg",
    "adjust_pvalues",
    "count_significant",
    "PatientPool",
    "pooled_ci",
    "paired_pooled_test",
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
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Two-sided paired bootstrap of metric(A) - metric(B) over the same patients.

    Returns {a, b, delta (A - B), delta_ci_low, delta_ci_high, p_value, n, n_patients, n_boot}
    and, below `min_patients` patients, `untestable` (a reason) with p_value and the CI NaN:
    nothing may be called significant then.
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
        alpha=alpha,
    )


def _adjusted(pvals: Sequence[float] | np.ndarray, adjust: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``adjust(sorted p-values)`` put back in the input order, capped at 1; NaN entries stay NaN."""
    p = np.asarray(pvals, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    if not ok.size:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    out[order] = np.minimum(adjust(p[order]), 1.0)
    return out


def _holm_sorted(p: np.ndarray) -> np.ndarray:
    m = p.size
    return np.maximum.accumulate((m - np.arange(m)) * p)


def _bh_sorted(p: np.ndarray) -> np.ndarray:
    m = p.size
    raw = p * m / np.arange(1, m + 1)
    return np.minimum.accumulate(raw[::-1])[::-1]


def holm(pvals: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error control); NaN entries stay NaN."""
    return _adjusted(pvals, _holm_sorted)


def benjamini_hochberg(pvals: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false-discovery-rate control); NaN entries stay NaN."""
    return _adjusted(pvals, _bh_sorted)


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


# ------------------------------------------------------------------ pooled units (seeds, families)
Unit = tuple[Callable[..., float], Sequence[np.ndarray], Sequence[Any] | np.ndarray]


class PatientPool:
    """One statistic over several units (seeds, family members) scored on the same patients.

    units: ``(fn, arrays, patients)`` each, with ``fn(*arrays)`` the unit's metric and one patient
    id per row of its arrays. The pool is one resamplable table of ``(unit, row)`` pairs keyed by
    patient; called on a subset of those pairs it returns the mean over units of each unit's
    metric on its rows of the subset (units whose metric is undefined there are left out; NaN
    when all are). Units may differ in what they hold (e.g. seeds with their own class lists).
    """

    def __init__(self, units: Sequence[Unit]) -> None:
        if not units:
            raise ValueError("a pool needs at least one unit")
        self.fns: list[Callable[..., float]] = []
        self.arrays: list[tuple[np.ndarray, ...]] = []
        ids: list[np.ndarray] = []
        for fn, arrays, patients in units:
            arrs = tuple(np.asarray(a) for a in arrays)
            n = len(arrs[0])
            if any(len(a) != n for a in arrs):
                raise ValueError("a unit's arrays must have one row per sample")
            self.fns.append(fn)
            self.arrays.append(arrs)
            ids.append(np.asarray([str(p) for p in _patients(patients, n)], dtype=object))
        self.unit = np.concatenate([np.full(len(p), u, dtype=np.int64) for u, p in enumerate(ids)])
        self.row = np.concatenate([np.arange(len(p), dtype=np.int64) for p in ids])
        self.patients = np.concatenate(ids) if ids else np.zeros(0, dtype=object)

    @property
    def n_units(self) -> int:
        return len(self.fns)

    @property
    def n_patients(self) -> int:
        return int(np.unique(self.patients.astype(str)).size)

    def __len__(self) -> int:
        return int(self.row.size)

    def __call__(self, unit: np.ndarray, row: np.ndarray) -> float:
        unit, row = np.asarray(unit), np.asarray(row)
        order = np.argsort(unit, kind="stable")
        counts = np.bincount(unit, minlength=self.n_units)
        parts = np.split(row[order], np.cumsum(counts)[:-1])
        vals = []
        with warnings.catch_warnings():  # a unit undefined on this draw is left out of the mean
            warnings.simplefilter("ignore", MetricWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            for fn, arrays, idx in zip(self.fns, self.arrays, parts, strict=True):
                if idx.size:
                    v = float(fn(*[a[idx] for a in arrays]))
                    if not np.isnan(v):
                        vals.append(v)
        return float(np.mean(vals)) if vals else float("nan")

    def value(self) -> float:
        """The statistic on every row: the mean over units of each unit's metric."""
        return self(self.unit, self.row)

    def same_rows(self, other: PatientPool) -> bool:
        """Do both pools hold the same units over the same patients' rows (so they pair)?"""
        return (
            self.n_units == other.n_units
            and np.array_equal(self.unit, other.unit)
            and np.array_equal(self.row, other.row)
            and np.array_equal(self.patients.astype(str), other.patients.astype(str))
        )


def _too_few(k: int, min_patients: int, what: str) -> str:
    return f"{k} test patient{'s' if k != 1 else ''} (< {min_patients}): {what}"


def pooled_ci(
    pool: PatientPool,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    min_patients: int = MIN_PATIENTS,
) -> CI:
    """The pool's statistic with a patient-level bootstrap CI; below `min_patients`, no interval.

    Every resample draws whole patients and brings each unit's rows of them along.
    """
    k = pool.n_patients
    if k < min_patients:
        nan = float("nan")
        return CI(pool.value(), nan, nan, len(pool), k, _too_few(k, min_patients, "no CI"))
    return patient_bootstrap_ci(
        pool, pool.unit, pool.row, patients=pool.patients, n_boot=n_boot, seed=seed, alpha=alpha
    )


class _Either:
    """`fn(which, unit, row)`: pool A where `which` is 0, else pool B (one fn for the paired test)."""

    def __init__(self, a: PatientPool, b: PatientPool) -> None:
        self.pools = (a, b)

    def __call__(self, which: np.ndarray, unit: np.ndarray, row: np.ndarray) -> float:
        return self.pools[int(which[0]) if len(which) else 0](unit, row)


def paired_pooled_test(
    pool_a: PatientPool,
    pool_b: PatientPool,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    min_patients: int = MIN_PATIENTS,
) -> dict[str, Any]:
    """Paired patient-level test of statistic(A) - statistic(B), with the difference's CI.

    The pools must hold the same units over the same rows (e.g. objective X and the baseline,
    seed s against seed s, on the same test images). Returns `paired_patient_test`'s fields (a,
    b, delta with delta_ci_low / delta_ci_high, p_value, n, n_patients, n_boot; `untestable`
    below `min_patients`). Each resample evaluates both pools once.
    """
    if not pool_a.same_rows(pool_b):
        raise ValueError("paired test needs both pools scored on the same units, rows and patients")
    which_a = np.zeros(len(pool_a), dtype=np.int64)
    return paired_patient_test(
        _Either(pool_a, pool_b),
        (which_a, pool_a.unit, pool_a.row),
        (which_a + 1, pool_a.unit, pool_a.row),
        patients=pool_a.patients,
        n_boot=n_boot,
        seed=seed,
        min_patients=min_patients,
        alpha=alpha,
    )
