"""Retrieval metrics: the rank of each query's first relevant gallery item, recall@K, rank summary.

`retrieval_ranks` is exact from a chunked bf16 screening GEMM with a rigorous error bound plus
exact re-scoring of the undecided items (`sonofm.stats.exact_ranks`), so a 100k x 100k gallery
never materialises; "fp32" decides on fp32 scores; "ivf" is approximate, from a FAISS IVF index.
Re-exported by `sonofm.stats.metrics`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sonofm.stats.metric_warning import warn_metric as _warn

log = logging.getLogger(__name__)

# Ranking semantics (all methods): rank = 1 + #gallery items scoring STRICTLY above the query's
# best-scoring relevant item. A query therefore "counts" for R@K iff any relevant item is in its
# top K (CLIP_benchmark's definition), and an irrelevant item tied with the best positive is
# resolved in the query's favour (topk-based code breaks such ties arbitrarily). Only one pass
# over the Q x G scores is made, in query chunks, with no sort: the O(Q*G*D) matmul dominates.
# "exact" compares the REAL dot products of the float32 inputs (see sonofm.stats.exact_ranks);
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
    import torch  # lazy: keeps torch out of stats.metrics (demo_report imports it)

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
    import torch  # lazy: keeps torch out of stats.metrics (demo_report imports it)

    if sims.shape[1] >= 2**24:
        return (sims > best[:, None]).sum(1)
    return sims.gt_(best[:, None]).sum(1).to(torch.int64)


def _default_chunk(ng: int) -> int:  # fp32 path
    # ~256 MB of fp32 scores per chunk: big enough for an efficient sgemm, small enough for a laptop
    return int(max(64, min(4096, (64 << 20) // max(ng, 1))))


def _ranks_fp32(q: Any, g: Any, pairs: Callable, chunk: int, ranks: np.ndarray) -> None:
    """fp32 sgemm per query chunk into one reused buffer; best positive read from the same scores."""
    import torch  # lazy: keeps torch out of stats.metrics (demo_report imports it)

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
    import faiss  # lazy: faiss is optional (no dependency); only method='ivf' needs it

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
    `sonofm.stats.exact_ranks`); "fp32": the same definition evaluated on fp32-sgemm scores (ranks
    differ only on near-ties within fp32 rounding; slower); "ivf" (FAISS IVF, approximate, ranks
    censored at `ivf_k` + 1; needs the key form; see `ivf_ranks`). `chunk` = query rows per GEMM.
    Pass a `RankInfo` as `info` to learn what ran, whether it is exact and how long it took.
    Embeddings with NaN/inf raise ValueError (exact).
    """
    import torch  # lazy: keeps torch out of stats.metrics (demo_report imports it)

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
                    from sonofm.stats.exact_ranks import screened_ranks  # lazy: exact_ranks imports torch

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
