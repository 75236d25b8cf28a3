"""Bootstrap confidence intervals and paired tests that resample whole patients.

`bootstrap_ci` (bias-corrected percentile CIs) and `paired_bootstrap` (compare two systems on
the same samples) work on any metric that is a plain function of per-sample arrays;
`sonofm.stats.patients` wraps them with the patient as the unit. Re-exported by
`sonofm.stats.metrics`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import norm

from sonofm.stats.metric_warning import MetricWarning

# Images of one patient are near-duplicates, so the unit of every interval and test is the patient
# when patient ids are given (`groups`): whole patients are resampled. Below MIN_PATIENTS patients
# a paired test claims nothing (p = NaN with a reason): with k patients a cluster bootstrap has at
# most C(2k-1, k) distinct resamples and underestimates the variance by (k-1)/k, and with one
# patient every resample is identical, which made "p = 0.010" out of a single echo exam.
MIN_PATIENTS = 10


@dataclass(frozen=True)
class CI:
    """A point estimate with its bootstrap interval, and how many samples / patients it rests on."""

    value: float
    low: float
    high: float
    n: int
    n_patients: int | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": self.value, "ci_low": self.low, "ci_high": self.high, "n": self.n}
        if self.n_patients is not None:
            out["n_patients"] = self.n_patients
        if self.note:
            out["note"] = self.note
        return out


def n_groups(groups: np.ndarray | None) -> int | None:
    """Number of distinct patients (None when no patient ids were given)."""
    return None if groups is None else int(np.unique(np.asarray(groups)).size)


def _resample_indices(n: int, n_boot: int, seed: int, groups: np.ndarray | None) -> np.ndarray:
    """(n_boot, n') index arrays; with `groups`, whole groups (patients) are resampled together."""
    rng = np.random.default_rng(seed)
    if groups is None:
        return rng.integers(0, n, size=(n_boot, n))
    _, inv = np.unique(np.asarray(groups), return_inverse=True)
    members = [np.flatnonzero(inv == g) for g in range(inv.max() + 1)]
    picks = rng.integers(0, len(members), size=(n_boot, len(members)))
    return [np.concatenate([members[j] for j in row]) for row in picks]  # type: ignore[return-value]


def _quiet(fn: Callable[..., float], arrays: Sequence[np.ndarray], idx: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        return float(fn(*[a[idx] for a in arrays]))


def bias_corrected_interval(stats: np.ndarray, value: float, alpha: float = 0.05) -> tuple[float, float, str]:
    """Bias-corrected (BC) percentile interval (Efron & Tibshirani 1993, ch. 14) of `value`.

    Why not the plain percentile interval: statistics such as ECE (a mean of |acc - conf|) are
    biased upward under resampling, so the percentile interval of a small test set can lie wholly
    above its own point estimate (ECE 0.096 with [0.103, 0.288]). BC shifts the percentiles by
    z0 = Phi^-1(share of resamples below the estimate), which is 0 (plain percentiles) for an
    unbiased statistic. Where even BC excludes the estimate (more than 97.5% of resamples on one
    side), the interval is widened to include it and the returned note says so.
    """
    b = stats.size
    p0 = (np.sum(stats < value) + 0.5 * np.sum(stats == value)) / b
    p0 = float(np.clip(p0, 0.5 / b, 1 - 0.5 / b))
    z0, z = norm.ppf(p0), norm.ppf(1 - alpha / 2)
    q = np.array([norm.cdf(2 * z0 - z), norm.cdf(2 * z0 + z)])
    lo, hi = (float(v) for v in np.percentile(stats, 100 * q))
    note = ""
    if not lo <= value <= hi:
        side = "above" if lo > value else "below"
        note = (
            f"{100 * (1 - p0 if side == 'above' else p0):.0f}% of resamples lie {side} the estimate "
            "(a strongly biased statistic on this sample); the interval is widened to include it"
        )
        lo, hi = min(lo, value), max(hi, value)
    return lo, hi, note


def bootstrap_ci(
    fn: Callable[..., float],
    *arrays: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    groups: np.ndarray | None = None,
) -> CI:
    """Bias-corrected bootstrap CI of `fn(*arrays)`, resampling rows jointly, or whole patients.

    The point estimate is `fn` on the original rows and the interval comes from `fn` on resampled
    rows: one definition for both (see `bias_corrected_interval`). With `groups` (patient ids)
    whole patients are resampled and the CI carries `n_patients`; one patient gives no interval.
    Resamples where the metric is undefined (NaN, e.g. one class drawn) are dropped.
    n_boot=0 gives the point estimate with NaN bounds.
    """
    arrays = tuple(np.asarray(a) for a in arrays)
    n = len(arrays[0])
    k = n_groups(groups)
    value = float(fn(*arrays))
    nan = float("nan")
    if n_boot <= 0 or n == 0 or np.isnan(value):
        return CI(value, nan, nan, n, k)
    if k is not None and k < 2:
        return CI(value, nan, nan, n, k, "one patient: no interval (every resample is the same patient)")
    stats = np.array([_quiet(fn, arrays, idx) for idx in _resample_indices(n, n_boot, seed, groups)])
    stats = stats[~np.isnan(stats)]
    if stats.size == 0:
        return CI(value, nan, nan, n, k)
    lo, hi, note = bias_corrected_interval(stats, value, alpha)
    return CI(value, lo, hi, n, k, note)


def paired_bootstrap(
    fn: Callable[..., float],
    arrays_a: Sequence[np.ndarray],
    arrays_b: Sequence[np.ndarray],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    groups: np.ndarray | None = None,
    min_patients: int = MIN_PATIENTS,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Two-sided paired-bootstrap p-value for H0: metric(A) == metric(B) on the same samples.

    Both models are evaluated on the SAME resampled rows (whole patients with `groups`);
    p = 2 * min(P(d <= 0), P(d >= 0)) with d = metric(A) - metric(B) over resamples
    ((count + 1) / (B + 1) correction), capped at 1. The same resampled d give the
    (1 - alpha) bias-corrected interval of the difference (`delta_ci_low` / `delta_ci_high`),
    so the p-value and the CI never disagree about which resamples they saw. With `groups` and
    fewer than `min_patients` patients no test is made: p_value and the CI are NaN and
    `untestable` says why.
    """
    arrays_a = tuple(np.asarray(a) for a in arrays_a)
    arrays_b = tuple(np.asarray(a) for a in arrays_b)
    n = len(arrays_a[0])
    if any(len(a) != n for a in (*arrays_a, *arrays_b)):
        raise ValueError("paired bootstrap needs both models scored on the same samples")
    if groups is not None and len(groups) != n:
        raise ValueError(f"groups has {len(groups)} entries for {n} samples")
    a0, b0 = float(fn(*arrays_a)), float(fn(*arrays_b))
    k = n_groups(groups)
    nan = float("nan")
    out: dict[str, Any] = {
        "a": a0,
        "b": b0,
        "delta": a0 - b0,
        "p_value": nan,
        "delta_ci_low": nan,
        "delta_ci_high": nan,
        "n_boot": 0,
        "n": n,
    }
    if k is not None:
        out["n_patients"] = k
        if k < min_patients:
            out["untestable"] = f"{k} test patient{'s' if k != 1 else ''} (< {min_patients}): no test"
            return out
    if n_boot <= 0 or n == 0 or np.isnan(a0) or np.isnan(b0):
        return out
    d = []
    for idx in _resample_indices(n, n_boot, seed, groups):
        da, db = _quiet(fn, arrays_a, idx), _quiet(fn, arrays_b, idx)
        if not (np.isnan(da) or np.isnan(db)):
            d.append(da - db)
    if not d:
        return out
    d_arr = np.asarray(d)
    nb = d_arr.size
    p_le = (np.sum(d_arr <= 0) + 1) / (nb + 1)
    p_ge = (np.sum(d_arr >= 0) + 1) / (nb + 1)
    lo, hi, note = bias_corrected_interval(d_arr, a0 - b0, alpha)
    out.update(p_value=float(min(1.0, 2 * min(p_le, p_ge))), n_boot=nb, delta_ci_low=lo, delta_ci_high=hi)
    if note:
        out["delta_ci_note"] = note
    return out
