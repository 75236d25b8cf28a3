"""Evaluation metrics with the definitions CLIP_benchmark / scikit-learn use, plus bootstrap CIs.

Classification: `acc1`, `balanced_accuracy` (mean per-class recall, CLIP_benchmark's
"mean_per_class_recall"), `macro_auc` (one-vs-rest ROC AUC averaged over classes), `binary_auc`,
`expected_calibration_error`. Regression: `mae`, `r2`. Retrieval: `retrieval_ranks` (rank of the
first relevant gallery item per query: exact from a chunked bf16 screening GEMM with a rigorous
error bound plus exact re-scoring of the undecided items (`sonofm.eval.exact_ranks`), so a
100k x 100k gallery never materialises; or approximate from a FAISS IVF index) and
`recall_at_k` / `rank_summary`.

Every metric is a plain function of per-sample arrays, so `bootstrap_ci` (bias-corrected
percentile CIs) and `paired_bootstrap` (compare mode) work on all of them by resampling whole
patients (or samples / queries when no patient ids are given); `sonofm.eval.stats` wraps them
with the patient as the unit and adds multiple-testing corrections.

AUC is computed here (Mann-Whitney U with mid-ranks, identical to scikit-learn's trapezoidal ROC
AUC including ties) rather than by calling `roc_auc_score`, because the bootstrap evaluates it
thousands of times and the rank form is several times faster; tests pin it to scikit-learn.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata

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


class MetricWarning(UserWarning):
    """A metric is undefined on this input (e.g. AUC with a single class) and was set to NaN."""


def _warn(msg: str) -> None:
    warnings.warn(msg, MetricWarning, stacklevel=3)


# ------------------------------------------------------------------ classification
def acc1(y_true: np.ndarray, scores_or_pred: np.ndarray) -> float:
    """Top-1 accuracy; accepts class scores (N, C) or predicted labels (N,)."""
    y = np.asarray(y_true)
    p = np.asarray(scores_or_pred)
    pred = p.argmax(1) if p.ndim == 2 else p
    if y.size == 0:
        _warn("acc1 of an empty set is undefined; returning NaN")
        return float("nan")
    return float(np.mean(pred == y))


def balanced_accuracy(y_true: np.ndarray, scores_or_pred: np.ndarray) -> float:
    """Mean recall over the classes present in y_true (sklearn `balanced_accuracy_score`)."""
    y = np.asarray(y_true)
    p = np.asarray(scores_or_pred)
    pred = p.argmax(1) if p.ndim == 2 else p
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


# ------------------------------------------------------------------ retrieval
# Ranking semantics (all methods): rank = 1 + #gallery items scoring STRICTLY above the query's
# best-scoring relevant item. A query therefore "counts" for R@K iff any relevant item is in its
# top K (CLIP_benchmark's definition), and an irrelevant item tied with the best positive is
# resolved in the query's favour (topk-based code breaks such ties arbitrarily). Only one pass
# over the Q x G scores is made, in query chunks, with no sort: the O(Q*G*D) matmul dominates.
# "exact" compares the REAL dot products of the float32 inputs (see sonofm.eval.exact_ranks);
# "fp32" is the former path, deciding on fp32-sgemm scores (same ranks except near-ties within
# fp32 rounding, ~1e-5 for unit vectors; ~1.7x slower on a CPU with AVX512-BF16: the bf16 GEMM
# runs at ~2.1x the fp32 rate, minus the counting passes; benchmarks/eval.py measures both).

RETRIEVAL_METHODS = ("exact", "fp32", "ivf")


@dataclass
class RankInfo:
    """How `retrieval_ranks` ran: the method, whether its ranks are exact, and what it cost."""

    method: str
    exact: bool
    seconds: float = 0.0
    censored_at: int | None = None  # ivf: ranks above this value mean "not in the top k"
    note: str = ""
    stats: dict[str, Any] | None = None  # exact: pairs re-scored / decided exactly, fallback queries

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def _positive_pairs(
    relevance: np.ndarray | tuple[np.ndarray, np.ndarray], nq: int, ng: int
) -> Callable[[int, int], tuple[Any, Any, Any]]:
    """A function (a, b) -> (rows, cols, has_positive) listing the relevant (query, gallery) pairs
    of query rows a..b (rows relative to a), from a dense bool matrix or from equal keys."""
    import torch

    if not isinstance(relevance, tuple):
        rel_all = torch.as_tensor(np.asarray(relevance, dtype=bool))
        if tuple(rel_all.shape) != (nq, ng):
            raise ValueError(f"relevance {tuple(rel_all.shape)} must be (Q, G) = {(nq, ng)}")

        def dense(a: int, b: int) -> tuple[Any, Any, Any]:
            rel = rel_all[a:b]
            rows, cols = rel.nonzero(as_tuple=True)
            return rows, cols, rel.any(1)

        return dense
    qk_np, gk_np = (np.asarray(k) for k in relevance)
    if len(qk_np) != nq or len(gk_np) != ng:
        raise ValueError("query/gallery keys must have one entry per query/gallery row")
    # shared integer codes; positives of a query are a contiguous run of the key-sorted gallery
    _, codes = np.unique(np.concatenate([qk_np, gk_np]), return_inverse=True)
    qc, gc = codes[:nq], codes[nq:]
    order = np.argsort(gc, kind="stable")
    sorted_codes = gc[order]
    starts_all = torch.as_tensor(np.searchsorted(sorted_codes, qc, side="left"))
    npos_all = torch.as_tensor(np.searchsorted(sorted_codes, qc, side="right")) - starts_all
    order_t = torch.as_tensor(order)

    def keyed(a: int, b: int) -> tuple[Any, Any, Any]:
        npos, starts = npos_all[a:b], starts_all[a:b]
        rows = torch.repeat_interleave(torch.arange(b - a), npos)
        # position of each pair inside its query's run: global index minus the run's first index
        first = torch.repeat_interleave(torch.cumsum(npos, 0) - npos, npos)
        within = torch.arange(int(npos.sum())) - first
        cols = order_t[starts[rows] + within]
        return rows, cols, npos > 0

    return keyed


def _count_above(sims: Any, best: Any) -> Any:
    """#entries per row strictly above `best`, in place on `sims` (no (c, G) bool temporary: ~30x
    faster on CPU). The float32 sum of 0/1 is exact below 2**24 gallery items; beyond, count ints."""
    import torch

    if sims.shape[1] >= 2**24:
        return (sims > best[:, None]).sum(1)
    return sims.gt_(best[:, None]).sum(1).to(torch.int64)


def _default_chunk(ng: int) -> int:  # fp32 path
    # ~256 MB of fp32 scores per chunk: big enough for an efficient sgemm, small enough for a laptop
    return int(max(64, min(4096, (64 << 20) // max(ng, 1))))


def _ranks_fp32(q: Any, g: Any, pairs: Callable, chunk: int, ranks: np.ndarray) -> None:
    """fp32 sgemm per query chunk into one reused buffer; best positive read from the same scores."""
    import torch

    nq, ng = q.shape[0], g.shape[0]
    buf = torch.empty(min(chunk, nq), ng, dtype=torch.float32)
    for a in range(0, nq, chunk):
        b = min(a + chunk, nq)
        sims = buf[: b - a]
        torch.mm(q[a:b], g.T, out=sims)
        rows, cols, has = pairs(a, b)
        best = torch.full((b - a,), -torch.inf)
        best.scatter_reduce_(0, rows, sims[rows, cols], reduce="amax")
        above = _count_above(sims, best)
        ranks[a:b] = torch.where(has, above + 1, torch.zeros_like(above)).numpy()


def ivf_ranks(
    query: np.ndarray,
    gallery: np.ndarray,
    relevance: tuple[np.ndarray, np.ndarray],
    *,
    k: int = 100,
    nlist: int | None = None,
    nprobe: int = 16,
    seed: int = 0,
) -> np.ndarray:
    """APPROXIMATE ranks from a FAISS IVF index (inverted lists of k-means cells, inner product).

    Only the top `k` hits per query are looked at: rank = 1 + #irrelevant hits scoring strictly
    above the best relevant hit; queries with no relevant hit get k + 1 ("beyond k"), so R@K is
    meaningful for K <= k and mean/median rank are not. IVF misses true neighbours that fall in
    unprobed cells, and cross-modal queries (a text far from its image, cosine ~0.3) often do:
    on such data (benchmarks/eval.py, 100k x 100k) R@1 dropped from 0.60 (exact) to 0.39 while
    saving only half the time. Compare with the exact method on a sample before trusting it.
    """
    import faiss

    q = np.ascontiguousarray(query, dtype=np.float32)
    g = np.ascontiguousarray(gallery, dtype=np.float32)
    nq, ng, d = q.shape[0], g.shape[0], g.shape[1]
    k = int(min(k, ng))
    # sqrt(G) cells, k-means on 40 points per cell, 10 iterations: training stays a few seconds
    nlist = int(nlist or max(1, min(4096, round(np.sqrt(ng)))))
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = 10
    index.cp.seed = seed
    index.cp.max_points_per_centroid = 40
    rng = np.random.default_rng(seed)
    train = g if ng <= 40 * nlist else g[np.sort(rng.choice(ng, 40 * nlist, replace=False))]
    index.train(train)
    index.add(g)
    index.nprobe = int(min(nprobe, nlist))
    scores, top = index.search(q, k)
    qk_np, gk_np = (np.asarray(x) for x in relevance)
    if len(qk_np) != nq or len(gk_np) != ng:
        raise ValueError("query/gallery keys must have one entry per query/gallery row")
    valid = top >= 0
    rel = valid & (gk_np[np.where(valid, top, 0)] == qk_np[:, None])
    found = rel.any(1)
    best = np.where(rel, scores, -np.inf).max(1)
    above = (valid & ~rel & (scores > best[:, None])).sum(1)
    has_any = np.isin(qk_np, gk_np)
    ranks = np.where(found, above + 1, k + 1)
    return np.where(has_any, ranks, 0).astype(np.int64)


def retrieval_ranks(
    query: np.ndarray,
    gallery: np.ndarray,
    relevance: np.ndarray | tuple[np.ndarray, np.ndarray],
    *,
    chunk: int | None = None,
    method: str = "exact",
    info: RankInfo | None = None,
    ivf_k: int = 100,
) -> np.ndarray:
    """1-based rank of the best-ranked relevant gallery item for each query (inner-product scores).

    relevance: a dense bool matrix (Q, G), or `(query_keys (Q,), gallery_keys (G,))` where a
    gallery item is relevant iff its key equals the query's (same report text, same study, ...);
    the key form lets 100k x 100k galleries run in chunks without a Q x G boolean matrix.
    rank = 1 + #items scoring strictly above the best relevant item (a tie with the best positive
    counts in the query's favour). Queries without any relevant item get rank 0 and are dropped by
    `recall_at_k` / `rank_summary` with a warning.

    method: "exact" (default): the comparisons are those of the real-number dot products of the
    float32-cast inputs, whatever their norms (a bf16 screening GEMM with a proven error bound,
    then float64 / exactly-rounded re-scoring of the items it cannot decide; see
    `sonofm.eval.exact_ranks`); "fp32": the same definition evaluated on fp32-sgemm scores (ranks
    differ only on near-ties within fp32 rounding; slower); "ivf" (FAISS IVF, approximate, ranks
    censored at `ivf_k` + 1; needs the key form; see `ivf_ranks`). `chunk` = query rows per GEMM.
    Pass a `RankInfo` as `info` to learn what ran, whether it is exact and how long it took.
    Embeddings with NaN/inf raise ValueError (exact).
    """
    import time

    import torch

    if method not in RETRIEVAL_METHODS:
        raise ValueError(f"method must be one of {RETRIEVAL_METHODS}, got {method!r}")
    t0 = time.perf_counter()
    nq, ng = len(query), len(gallery)
    rec = info if info is not None else RankInfo(method, method != "ivf")
    rec.method, rec.exact = method, method != "ivf"
    if method == "ivf":
        if not isinstance(relevance, tuple):
            raise ValueError("method='ivf' needs relevance as (query_keys, gallery_keys)")
        ranks = ivf_ranks(query, gallery, relevance, k=ivf_k)
        rec.censored_at = int(min(ivf_k, ng)) + 1
        rec.note = f"approximate: FAISS IVF top-{rec.censored_at - 1}; ranks beyond it read {rec.censored_at}"
    else:
        q = torch.as_tensor(np.ascontiguousarray(query, dtype=np.float32))
        g = torch.as_tensor(np.ascontiguousarray(gallery, dtype=np.float32))
        pairs = _positive_pairs(relevance, nq, ng)
        ranks = np.zeros(nq, dtype=np.int64)
        if nq and ng:
            with torch.inference_mode():
                if method == "fp32":
                    _ranks_fp32(q, g, pairs, int(chunk or _default_chunk(ng)), ranks)
                    rec.note = "full ranks decided on fp32-sgemm scores"
                else:
                    from sonofm.eval.exact_ranks import screened_ranks

                    st = screened_ranks(q, g, pairs, ranks, chunk=int(chunk or 1024))
                    rec.stats = st.to_dict()
                    rec.note = "exact in real arithmetic: bf16 screen + float64/exact re-check"
    rec.seconds = time.perf_counter() - t0
    log.debug("retrieval ranks %d x %d: %s", nq, ng, rec)
    return ranks


def _valid_ranks(ranks: np.ndarray) -> np.ndarray:
    r = np.asarray(ranks)
    ok = r > 0
    if not ok.all():
        _warn(f"{int((~ok).sum())} queries have no relevant gallery item and are ignored")
    return r[ok]


def recall_at_k(ranks: np.ndarray, k: int) -> float:
    """Fraction of queries with any relevant item in the top k (CLIP_benchmark's R@K)."""
    r = _valid_ranks(ranks)
    return float(np.mean(r <= k)) if r.size else float("nan")


def rank_summary(ranks: np.ndarray) -> dict[str, float]:
    r = _valid_ranks(ranks)
    if not r.size:
        return {"mean_rank": float("nan"), "median_rank": float("nan")}
    return {"mean_rank": float(r.mean()), "median_rank": float(np.median(r))}


# ------------------------------------------------------------------ bootstrap
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
    from scipy.stats import norm

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
