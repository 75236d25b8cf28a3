"""Metrics against scikit-learn on random inputs (ties, single class) and hand-built retrieval cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
)

from sonofm.stats import metrics as M


def _softmax(x):
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("seed", range(5))
def test_classification_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    n, c = 200, 5
    y = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)) + 1.5 * np.eye(c)[y]
    # quantise to create many ties
    probs = _softmax(np.round(logits, 0))
    assert M.acc1(y, probs) == pytest.approx(accuracy_score(y, probs.argmax(1)))
    assert M.balanced_accuracy(y, probs) == pytest.approx(balanced_accuracy_score(y, probs.argmax(1)))
    assert M.macro_auc(y, probs) == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    yb = (y == 0).astype(int)
    s = np.round(rng.normal(size=n) + yb, 1)  # heavy ties
    assert M.binary_auc(yb, s) == pytest.approx(roc_auc_score(yb, s))
    # binary with 2 score columns uses column 1 like sklearn
    p2 = _softmax(np.stack([-s, s], 1))
    assert M.macro_auc(yb, p2) == pytest.approx(roc_auc_score(yb, p2[:, 1]))


def test_auc_all_tied_scores_is_half():
    y = np.array([0, 1, 0, 1, 1])
    assert M.binary_auc(y, np.zeros(5)) == pytest.approx(roc_auc_score(y, np.zeros(5))) == 0.5


def test_single_class_auc_is_nan_with_warning():
    with pytest.warns(M.MetricWarning):
        assert np.isnan(M.binary_auc(np.ones(10), np.arange(10.0)))
    with pytest.warns(M.MetricWarning):
        assert np.isnan(
            M.macro_auc(np.zeros(10, int), _softmax(np.random.default_rng(0).normal(size=(10, 3))))
        )


def test_macro_auc_skips_absent_class_with_warning():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 100)  # class 3 never appears
    p = _softmax(rng.normal(size=(100, 4)))
    with pytest.warns(M.MetricWarning):
        got = M.macro_auc(y, p)
    want = np.mean([roc_auc_score(y == k, p[:, k]) for k in range(3)])
    assert got == pytest.approx(want)


def test_regression_matches_sklearn():
    rng = np.random.default_rng(0)
    y = rng.normal(50, 10, 300)
    p = y + rng.normal(0, 5, 300)
    assert M.mae(y, p) == pytest.approx(mean_absolute_error(y, p))
    assert M.r2(y, p) == pytest.approx(r2_score(y, p))
    with pytest.warns(M.MetricWarning):
        assert np.isnan(M.r2(np.ones(5), np.arange(5.0)))


@pytest.mark.parametrize("seed", range(3))
def test_binary_ece_matches_calibration_curve(seed):
    rng = np.random.default_rng(seed)
    p = rng.uniform(size=500)
    y = (rng.uniform(size=500) < p**1.5).astype(int)
    n_bins = 10
    prob_true, prob_pred = calibration_curve(y, p, n_bins=n_bins, strategy="uniform")
    # sklearn bins on [i/n, (i+1)/n); recompute counts with its convention (random p never hits edges)
    counts = np.bincount(np.minimum((p * n_bins).astype(int), n_bins - 1), minlength=n_bins)
    counts = counts[counts > 0]
    want = float(np.sum(counts / counts.sum() * np.abs(prob_true - prob_pred)))
    assert M.expected_calibration_error(y, p, n_bins=n_bins) == pytest.approx(want)


def test_multiclass_ece_hand_loop():
    rng = np.random.default_rng(3)
    probs = _softmax(rng.normal(size=(400, 4)) * 2)
    y = rng.integers(0, 4, 400)
    conf, pred = probs.max(1), probs.argmax(1)
    ece = 0.0
    for lo, hi in zip(np.linspace(0, 1, 16)[:-1], np.linspace(0, 1, 16)[1:], strict=True):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs((pred[m] == y[m]).mean() - conf[m].mean())
    assert M.expected_calibration_error(y, probs) == pytest.approx(ece)
    # a perfectly calibrated-by-construction case: confidence 1 and always right -> 0
    assert M.expected_calibration_error(np.array([0, 1]), np.eye(2)) == 0.0


def test_retrieval_multiple_positives_hand_built():
    # 3 queries, 5 gallery items, 1-D embeddings so scores are easy to read
    q = np.array([[1.0], [1.0], [-1.0]])
    g = np.array([[0.9], [0.5], [0.1], [-0.2], [-0.8]])
    rel = np.array(
        [
            [False, False, True, True, False],  # best positive 0.1 -> 2 negatives above -> rank 3
            [True, False, False, False, True],  # best positive 0.9 -> rank 1
            [
                False,
                True,
                False,
                False,
                False,
            ],  # scores -.9,-.5,-.1,.2,.8: pos -.5 -> rank 4
        ]
    )
    ranks = M.retrieval_ranks(q, g, rel)
    assert ranks.tolist() == [3, 1, 4]
    assert M.recall_at_k(ranks, 1) == pytest.approx(1 / 3)
    assert M.recall_at_k(ranks, 3) == pytest.approx(2 / 3)
    assert M.recall_at_k(ranks, 5) == 1.0
    assert M.rank_summary(ranks) == {"mean_rank": pytest.approx(8 / 3), "median_rank": 3.0}


def test_retrieval_keys_equal_dense_and_chunked():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(57, 8))
    g = rng.normal(size=(91, 8))
    qk = rng.integers(0, 10, 57)
    gk = rng.integers(0, 12, 91)
    dense = qk[:, None] == gk[None, :]
    r1 = M.retrieval_ranks(q, g, dense)
    r2 = M.retrieval_ranks(q, g, (qk, gk), chunk=7)
    assert np.array_equal(r1, r2)
    # brute force: position of the first relevant item in the full descending sort
    s = q @ g.T
    for i in range(57):
        if not dense[i].any():
            assert r1[i] == 0
            continue
        order = np.argsort(-s[i], kind="stable")
        assert r1[i] == np.flatnonzero(dense[i][order])[0] + 1
    with pytest.warns(M.MetricWarning):
        M.recall_at_k(r1, 1) if (r1 == 0).any() else M.recall_at_k(np.append(r1, 0), 1)


def test_bootstrap_ci_contains_value_and_is_seeded():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = rng.normal(size=300) + y
    ci = M.bootstrap_ci(M.binary_auc, y, s, n_boot=300, seed=1)
    assert ci.low < ci.value < ci.high
    assert ci == M.bootstrap_ci(M.binary_auc, y, s, n_boot=300, seed=1)
    assert ci.value == pytest.approx(roc_auc_score(y, s))
    # width shrinks roughly like 1/sqrt(n)
    y4, s4 = np.tile(y, 4), np.tile(s, 4)
    ci4 = M.bootstrap_ci(M.binary_auc, y4, s4, n_boot=300, seed=1)
    assert (ci4.high - ci4.low) < 0.7 * (ci.high - ci.low)
    # per-patient (grouped) resampling runs and still brackets the estimate
    groups = np.arange(300) // 3
    cig = M.bootstrap_ci(M.binary_auc, y, s, n_boot=200, seed=1, groups=groups)
    assert cig.low < cig.value < cig.high


def test_bootstrap_mean_ci_matches_normal_theory():
    x = np.random.default_rng(5).normal(size=2000)
    ci = M.bootstrap_ci(np.mean, x, n_boot=1000, seed=0)
    se = x.std() / np.sqrt(x.size)
    assert ci.low == pytest.approx(x.mean() - 1.96 * se, abs=0.3 * se)
    assert ci.high == pytest.approx(x.mean() + 1.96 * se, abs=0.3 * se)


def test_paired_bootstrap_pvalues():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    good = rng.normal(size=400) + 2 * y
    bad = rng.normal(size=400) + 0.2 * y
    res = M.paired_bootstrap(M.binary_auc, (y, good), (y, bad), n_boot=300, seed=0)
    assert res["delta"] > 0 and res["p_value"] < 0.01
    same = M.paired_bootstrap(M.binary_auc, (y, good), (y, good), n_boot=300, seed=0)
    assert same["delta"] == 0 and same["p_value"] == 1.0
    with pytest.raises(ValueError):
        M.paired_bootstrap(M.binary_auc, (y, good), (y[:10], bad[:10]))
