"""Evaluation metrics with the definitions CLIP_benchmark / scikit-learn use, plus bootstrap CIs.

Classification: `acc1`, `balanced_accuracy` (mean per-class recall, CLIP_benchmark's
"mean_per_class_recall"), `macro_auc` (one-vs-rest ROC AUC averaged over classes), `binary_auc`,
`expected_calibration_error`. Regression: `mae`, `r2`. Retrieval: `retrieval_ranks` (rank of the
first relevant gallery item per query: exact from a chunked bf16 screening GEMM with a rigorous
error bound plus exact re-scoring of the undecided items (`sonofm.stats.exact_ranks`), so a
100k x 100k gallery never materialises; or approximate from a FAISS IVF index) and
`recall_at_k` / `rank_summary`.

Every metric is a plain function of per-sample arrays, so `bootstrap_ci` (bias-corrected
percentile CIs) and `paired_bootstrap` (compare mode) work on all of them by resampling whole
patients (or samples / queries when no patient ids are given); `sonofm.stats.patients` wraps them
with the patient as the unit and adds multiple-testing corrections.

This module holds the classification and regression metrics; the retrieval ones live in
`sonofm.stats.ranks`, the bootstrap in `sonofm.stats.bootstrap`, `MetricWarning` in
`sonofm.stats.metric_warning`; every name is re-exported here.

AUC is computed here (Mann-Whitney U with mid-ranks, identical to scikit-learn's trapezoidal ROC
AUC including ties) rather than by calling `roc_auc_score`, because the bootstrap evaluates it
thousands of times and the rank form is several times faster; tests pin it to scikit-learn.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.stats import rankdata

from sonofm.stats.bootstrap import (  # noqa: F401 (re-exported; _resample_indices for tests)
    CI,
    MIN_PATIENTS,
    _resample_indices,
    bias_corrected_interval,
    bootstrap_ci,
    n_groups,
    paired_bootstrap,
)
from sonofm.stats.metric_warning import MetricWarning
from sonofm.stats.metric_warning import warn_metric as _warn
from sonofm.stats.ranks import (  # noqa: F401 (re-exported; _positive_pairs for exact_ranks' tests)
    RETRIEVAL_METHODS,
    RankInfo,
    _positive_pairs,
    ivf_ranks,
    rank_summary,
    recall_at_k,
    retrieval_ranks,
)

log = logging.getLogger(__name__)

__all__ = [
    "MetricWarning",
    "acc1",
    "balanced_accuracy",
    "binary_auc",
    "macro_auc",
    "per_class_auc",
    "expected_calibration_error",
    "reliability_bins",
    "mae",
    "r2",
    "retrieval_ranks",
    "ivf_ranks",
    "RankInfo",
    "RETRIEVAL_METHODS",
    "recall_at_k",
    "rank_summary",
    "CI",
    "MIN_PATIENTS",
    "n_groups",
    "bias_corrected_interval",
    "bootstrap_ci",
    "paired_bootstrap",
]


# ------------------------------------------------------------------ classification
def _labels_and_predictions(y_true: np.ndarray, scores_or_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels, predicted labels) from class scores (N, C) or predicted labels (N,)."""
    p = np.asarray(scores_or_pred)
    return np.asarray(y_true), (p.argmax(1) if p.ndim == 2 else p)


def acc1(y_true: np.ndarray, scores_or_pred: np.ndarray) -> float:
    """Top-1 accuracy; accepts class scores (N, C) or predicted labels (N,)."""
    y, pred = _labels_and_predictions(y_true, scores_or_pred)
    if y.size == 0:
        _warn("acc1 of an empty set is undefined; returning NaN")
        return float("nan")
    return float(np.mean(pred == y))


def balanced_accuracy(y_true: np.ndarray, scores_or_pred: np.ndarray) -> float:
    """Mean recall over the classes present in y_true (sklearn `balanced_accuracy_score`)."""
    y, pred = _labels_and_predictions(y_true, scores_or_pred)
    if y.size == 0:
        _warn("balanced accuracy of an empty set is undefined; returning NaN")
        return float("nan")
    classes = np.unique(y)
    return float(np.mean([np.mean(pred[y == c] == c) for c in classes]))


def _auc_rank(y: np.ndarray, s: np.ndarray) -> float:
    """Mann-Whitney AUC with mid-ranks (ties count 1/2, as sklearn's trapezoidal ROC)."""
    pos = y.astype(bool)
    n_pos = int(pos.sum())
    n_neg = pos.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def binary_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of a binary problem (y in {0,1} or bool); NaN with a MetricWarning if one class."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    if not (s.shape == y.shape and y.ndim == 1):
        raise ValueError(f"binary_auc: y_true {y.shape} and score {s.shape} must be equal 1-D shapes")
    out = _auc_rank(y, s)
    if np.isnan(out):
        _warn(f"AUC undefined: only one class present in y_true (n={y.size}, positives={int(y.sum())})")
    return out


def per_class_auc(y_true: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """One-vs-rest AUC per class column of `scores` (N, C); NaN where a class is absent or universal."""
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    return np.array([_auc_rank(y == c, s[:, c]) for c in range(s.shape[1])])


def macro_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Macro one-vs-rest ROC AUC (sklearn `roc_auc_score(multi_class="ovr", average="macro")`).

    Classes that never occur in y_true (or are the only class) have no defined AUC; they are left
    out of the average with a MetricWarning, where sklearn would raise. Binary (C=2) uses column 1
    alone, as sklearn does. All classes undefined -> NaN.
    """
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"macro_auc: scores must be (N, C), got {s.shape}")
    if s.shape[1] == 2:
        return binary_auc(y == 1, s[:, 1])
    aucs = per_class_auc(y, s)
    ok = ~np.isnan(aucs)
    if not ok.any():
        _warn("macro AUC undefined: fewer than two classes present in y_true; returning NaN")
        return float("nan")
    if not ok.all():
        _warn(f"macro AUC averages {int(ok.sum())}/{aucs.size} classes (others absent from y_true)")
    return float(aucs[ok].mean())


def reliability_bins(
    y_true: np.ndarray, probs: np.ndarray, n_bins: int = 15
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width confidence bin: (mean confidence, accuracy, count); empty bins give NaN.

    probs (N,) = binary probability of the positive class (bins on p, accuracy = fraction of
    positives, as sklearn's `calibration_curve` and torchmetrics' BinaryCalibrationError), or
    (N, C) = class probabilities (top-label: confidence = max prob, accuracy = argmax == y).
    """
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 2:
        conf = p.max(1)
        correct = (p.argmax(1) == y).astype(np.float64)
    else:
        conf = p
        correct = y.astype(np.float64)
    # bin i holds (edges[i], edges[i+1]]; 0 goes to the first bin (torchmetrics' convention)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
        acc = np.bincount(idx, weights=correct, minlength=n_bins) / count
    return mean_conf, acc, count


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> float:
    """ECE = sum_b (n_b / n) |acc_b - conf_b| over equal-width bins (see `reliability_bins`)."""
    if np.asarray(y_true).size == 0:
        _warn("ECE of an empty set is undefined; returning NaN")
        return float("nan")
    conf, acc, count = reliability_bins(y_true, probs, n_bins)
    ok = count > 0
    return float(np.sum(count[ok] / count.sum() * np.abs(acc[ok] - conf[ok])))


# ------------------------------------------------------------------ regression
def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y, p = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    if y.size == 0:
        _warn("MAE of an empty set is undefined; returning NaN")
        return float("nan")
    return float(np.mean(np.abs(y - p)))


def r2(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination (sklearn `r2_score`); constant y_true -> NaN with a warning."""
    y, p = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    ss_tot = float(np.sum((y - y.mean()) ** 2)) if y.size else 0.0
    if y.size < 2 or ss_tot == 0.0:
        _warn("R^2 undefined: fewer than two samples or constant targets; returning NaN")
        return float("nan")
    return 1.0 - float(np.sum((y - p) ** 2)) / ss_tot
