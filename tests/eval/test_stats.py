"""Patient-level statistics on constructed data: what the old image-level statistics got wrong."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import false_discovery_control

from sonofm.eval.tasks import EvalContext, KNNProbe, LinearProbe
from sonofm.inference.embed import SplitEmbeddings
from sonofm.stats import metrics as M
from sonofm.stats import patients as S
from sonofm.stats.health import chance_relation, prediction_health


def test_single_patient_gives_no_interval_and_no_significance():
    """One echo exam (all test EFs from one patient): the old code printed p = 0.010."""
    rng = np.random.default_rng(0)
    y = np.full(12, 58.0)
    good, bad = y + rng.normal(0, 1, 12), y + rng.normal(0, 5, 12)
    pats = np.array(["p0"] * 12)
    ci = S.patient_bootstrap_ci(M.mae, y, good, patients=pats, n_boot=200)
    assert ci.n_patients == 1 and np.isnan(ci.low) and np.isnan(ci.high) and "one patient" in ci.note
    t = S.paired_patient_test(M.mae, (y, good), (y, bad), patients=pats, n_boot=200)
    assert np.isnan(t["p_value"]) and t["n_patients"] == 1 and "no test" in t["untestable"]
    # the same data resampled as images (the old default) claims significance: the bug this fixes
    assert M.paired_bootstrap(M.mae, (y, good), (y, bad), n_boot=200)["p_value"] < 0.05


def test_min_patients_rule_and_clear_difference():
    rng = np.random.default_rng(1)
    k, per = 30, 4
    pats = np.repeat([f"p{i}" for i in range(k)], per)
    y = rng.integers(0, 2, k * per)
    good = y + rng.normal(0, 0.3, y.size)
    bad = rng.normal(0, 1, y.size)
    t = S.paired_patient_test(M.binary_auc, (y, good), (y, bad), patients=pats, n_boot=300)
    assert t["n_patients"] == k and t["p_value"] < 0.01 and "untestable" not in t
    few = np.isin(pats, [f"p{i}" for i in range(S.MIN_PATIENTS - 1)])
    t9 = S.paired_patient_test(M.binary_auc, (y[few], good[few]), (y[few], bad[few]), patients=pats[few])
    assert np.isnan(t9["p_value"]) and t9["n_patients"] == S.MIN_PATIENTS - 1


def test_patient_bootstrap_is_wider_than_image_bootstrap_for_clustered_data():
    """Images of a patient share its error: resampling images understates the uncertainty."""
    rng = np.random.default_rng(2)
    k, per = 20, 10
    pats = np.repeat(np.arange(k), per)
    err = np.repeat(rng.normal(0, 1, k), per) + rng.normal(0, 0.1, k * per)
    by_patient = S.patient_bootstrap_ci(np.mean, err, patients=pats, n_boot=500)
    by_image = M.bootstrap_ci(np.mean, err, n_boot=500)
    assert by_patient.n_patients == k and by_image.n_patients is None
    assert (by_patient.high - by_patient.low) > 2.0 * (by_image.high - by_image.low)


@pytest.mark.parametrize("seed", range(6))
def test_every_statistic_lies_inside_its_own_interval(seed):
    """ECE was printed as 0.096 with CI [0.103, 0.288]: the resampled ECE is biased upward."""
    rng = np.random.default_rng(seed)
    n, c = 24, 5
    y = rng.integers(0, c, n)
    probs = rng.dirichlet(np.ones(c) * 0.3, size=n)
    pats = np.repeat(np.arange(n // 2), 2)
    for fn in (M.expected_calibration_error, M.acc1, M.balanced_accuracy, M.macro_auc):
        for groups in (None, pats):
            ci = M.bootstrap_ci(fn, y, probs, n_boot=300, seed=seed, groups=groups)
            assert ci.value == pytest.approx(fn(y, probs))  # point estimate: same definition
            if not np.isnan(ci.low):
                assert ci.low <= ci.value <= ci.high, (fn.__name__, ci)


def test_ece_percentile_interval_excluded_its_estimate_bc_does_not():
    """Perfectly calibrated on the sample (ECE 0): almost every resample has ECE > 0, so the plain
    percentile interval lies wholly above its own estimate, as in the report (0.096 vs [0.103, ...])."""
    conf = np.repeat([0.1, 0.3, 0.5, 0.7, 0.9], 10)  # five bins, each with exactly conf*10 positives
    y = np.concatenate([np.arange(10) < round(10 * c) for c in (0.1, 0.3, 0.5, 0.7, 0.9)]).astype(int)
    p, n = conf, conf.size
    value = M.expected_calibration_error(y, p)
    stats = np.array([M.expected_calibration_error(y[i], p[i]) for i in M._resample_indices(n, 400, 0, None)])
    assert value < 1e-12 and np.percentile(stats, 2.5) > value  # the old interval missed its own estimate
    ci = M.bootstrap_ci(M.expected_calibration_error, y, p, n_boot=400, seed=0)
    assert ci.low <= ci.value <= ci.high and "widened" in ci.note


def test_holm_and_bh_match_references():
    p = np.random.default_rng(4).uniform(size=25) ** 3
    assert np.allclose(S.benjamini_hochberg(p), false_discovery_control(p))
    m, order, run, ref = len(p), np.argsort(p), 0.0, np.empty(len(p))
    for i, j in enumerate(order):
        run = max(run, (m - i) * p[j])
        ref[j] = min(run, 1.0)
    assert np.allclose(S.holm(p), ref)
    with_nan = np.append(p, np.nan)
    assert np.isnan(S.holm(with_nan)[-1]) and np.allclose(S.holm(with_nan)[:-1], ref)
    # 14 of 35 nominally significant: the counts say how many survive each correction
    pv = np.r_[np.full(10, 1e-4), np.full(4, 0.03), np.linspace(0.2, 0.9, 21)]
    counts = S.count_significant(pv.tolist())
    assert counts == {"tests": 35, "raw": 14, "holm": 10, "bh": 10}
    with pytest.raises(ValueError, match="unknown correction"):
        S.adjust_pvalues(p, "bonferroni-ish")


def test_prediction_health_collapse_vs_imbalance():
    classes = ["cyst", "mass", "nodule", "normal appearance", "fluid collection"]
    y = np.arange(50) % 5
    collapsed = np.tile(np.eye(5)[0] + 0.01, (50, 1))
    h = prediction_health(y, collapsed, classes)
    assert h["collapsed"] and h["majority_class"] == "cyst" and h["majority_share"] == 1.0
    assert h["entropy"] == 0.0 and h["n_predicted_classes"] == 1
    healthy = prediction_health(y, np.eye(5)[y], classes)
    assert not healthy["collapsed"] and healthy["entropy"] == pytest.approx(1.0)
    # a test set that is 90% one class, followed by the model: imbalance, not collapse
    y_imb = np.r_[np.zeros(45, int), np.arange(5)]
    assert not prediction_health(y_imb, np.eye(5)[y_imb], classes)["collapsed"]


def test_chance_relation_uses_the_interval():
    assert chance_relation(0.0, 0.0, 0.0, 0.2) == "below"  # 0.000 accuracy is not "close to chance"
    assert chance_relation(0.1, 0.05, 0.17, 0.011) == "above"  # R@1 9x chance
    assert chance_relation(0.52, 0.45, 0.6, 0.5) == "at"
    assert chance_relation(0.2, 0.1, 0.3, 0.5) == "below"
    assert chance_relation(0.51, None, None, 0.5) == "at" and chance_relation(None, None, None, 0.5) is None


# ------------------------------------------------------------------ tasks on constructed embeddings
def _probe_ctx(test_region: str) -> EvalContext:
    rng = np.random.default_rng(0)
    rows, emb = [], {}
    for split, regions in (
        ("train", ["liver", "thyroid"] * 10),
        ("val", ["liver", "thyroid"] * 2),
        ("test", [test_region] * 6),
    ):
        ids = [f"{split}{i}" for i in range(len(regions))]
        x = rng.normal(size=(len(regions), 8)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        emb[split] = SplitEmbeddings(ids, x, x.copy())
        rows += [
            {"id": i, "split": split, "patient_id": f"{split}-p{k // 2}", "region": r, "diagnosis": "cyst"}
            for k, (i, r) in enumerate(zip(ids, regions, strict=True))
        ]
    return EvalContext(model=None, df=pd.DataFrame(rows), root=None, embeddings=emb, n_boot=20, seed=0)


@pytest.mark.parametrize("task", [LinearProbe(target="region"), KNNProbe(target="region", k=3)])
def test_probe_skips_with_a_reason_when_test_classes_are_unseen(task):
    """The old linear probe raised `ValueError: Found array with 0 sample(s)` here."""
    res = task.run(_probe_ctx("breast"))
    assert res.skipped and "breast" in res.skipped
    assert res.info["test_unseen_classes"] == {"breast": 6}


def test_probe_reports_patients_and_health():
    res = LinearProbe(target="region").run(_probe_ctx("liver"))
    assert res.skipped is None and res.metrics["acc1"].n_patients == 3
    assert res.info["health"]["n"] == 6 and res.info["n_patients"] == 3


# ------------------------------------------------------------------ pooled seeds (fine-tuning, ablation)
def _seeds(k: int, per: int, n_seeds: int, hit_rate: float, seed: int):
    """`n_seeds` units of (acc1, (y, pred), patients) on the same k patients x per images."""
    rng = np.random.default_rng(seed)
    pats = np.repeat([f"p{i}" for i in range(k)], per)
    y = np.random.default_rng(99).integers(0, 3, k * per)
    units = []
    for _ in range(n_seeds):
        pred = np.where(rng.random(y.size) < hit_rate, y, (y + 1) % 3)
        units.append((M.acc1, (y, pred), pats))
    return units


def test_patient_pool_is_the_seed_mean_resampled_by_patient():
    units = _seeds(k=15, per=4, n_seeds=3, hit_rate=0.7, seed=0)
    pool = S.PatientPool(units)
    stacked = M.acc1(np.concatenate([u[1][0] for u in units]), np.concatenate([u[1][1] for u in units]))
    assert pool.value() == pytest.approx(np.mean([M.acc1(*u[1]) for u in units])) == pytest.approx(stacked)
    assert pool.n_patients == 15 and len(pool) == 180 and pool.n_units == 3
    ci = S.pooled_ci(pool, n_boot=300)
    assert ci.n_patients == 15 and ci.low <= ci.value <= ci.high and ci.low < ci.high
    few = S.PatientPool([(fn, tuple(a[:36] for a in arrays), p[:36]) for fn, arrays, p in units])
    ci9 = S.pooled_ci(few, n_boot=300)  # 9 patients: no interval, and it says why
    assert ci9.n_patients == S.MIN_PATIENTS - 1 and np.isnan(ci9.low) and "no CI" in ci9.note


def test_paired_pooled_test_difference_ci_and_min_patients():
    good = S.PatientPool(_seeds(k=20, per=3, n_seeds=2, hit_rate=0.9, seed=1))
    bad = S.PatientPool(_seeds(k=20, per=3, n_seeds=2, hit_rate=0.4, seed=2))
    t = S.paired_pooled_test(good, bad, n_boot=300)
    assert t["delta"] == pytest.approx(good.value() - bad.value())
    assert t["p_value"] < 0.01 and t["n_patients"] == 20
    assert 0 < t["delta_ci_low"] <= t["delta"] <= t["delta_ci_high"]
    same = S.paired_pooled_test(good, good, n_boot=100)
    assert same["delta"] == 0 and same["p_value"] == 1.0
    few = [S.PatientPool([(fn, tuple(a[:9] for a in arr), p[:9]) for fn, arr, p in pool_units])
           for pool_units in (_seeds(20, 3, 2, 0.9, 1), _seeds(20, 3, 2, 0.4, 2))]  # fmt: skip
    t3 = S.paired_pooled_test(*few, n_boot=100)
    assert np.isnan(t3["p_value"]) and np.isnan(t3["delta_ci_low"]) and "no test" in t3["untestable"]
    with pytest.raises(ValueError, match="same units"):
        S.paired_pooled_test(good, S.PatientPool(_seeds(k=20, per=3, n_seeds=3, hit_rate=0.5, seed=3)))
