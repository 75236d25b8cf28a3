"""Exact retrieval ranks at bf16 speed: a bfloat16 screening GEMM with a rigorous error bound, then
exact re-scoring of the few gallery items the bound cannot decide.

What "exact" means: inputs are float32; gallery item g is above query q's best positive p iff the
REAL-number dot products satisfy q.g > q.p (no rounding at all). Exact ties (duplicate vectors,
integer-valued toy data) are ties, so they count in the query's favour; neither fp32 GEMM
blocking nor summation order can flip a near-tie. The former fp32-sgemm path decides on
float32-rounded scores instead (error up to ~1e-5 for unit vectors), which agrees with this
definition except on near-ties within that rounding.

How, per (query chunk x gallery tile):
1. The best positive's score t is computed in float64 from gathered rows (tiny error, bounded).
2. One bf16 GEMM with 3 extra input columns gives out = bf16(q_bf.g_bf - t_hi - t_lo), the score
   minus the (bf16-split) threshold, accumulated in fp32 by oneDNN. Folding t into the GEMM keeps
   the bf16 rounding of the OUTPUT relative to |s - t| (tiny near the threshold) instead of |s|.
3. |(q.g - t) - out| <= B_i, a per-query bound from Cauchy-Schwarz on the input rounding
   (|q.dg + dq.g + dq.dg| <= |q||dg| + |dq||g| + |dq||dg|, norms measured exactly), the fp32
   accumulation error (2 K u32 sum|terms|), the t split and the output rounding (2^-8 |out|).
   Items with out > A_i (A_i >= B_i (1 + 2^-7), rounded up to bf16) are surely above; |out| <= A_i
   is the ambiguous band. Both tests run on the raw int16 bits in place (positive bf16 order like
   int16), and the 0/1 flags are counted 4 at a time as packed int64 lanes: torch's own bool
   reductions cost more than the GEMM.
4. Band items are re-scored in float64 (gathered rows) with the float64 error bound; what that
   cannot decide (|difference| <= ~1e-13) is decided exactly: bitwise-equal vectors tie; sums
   whose every float64 addition was exact (TwoSum error 0: integer / binary codes) give the true
   sign, vectorised; the rest by `math.fsum` over the exact float64 products (correctly rounded,
   so its sign is exact; a Python loop, reached only by genuine ties of non-identical vectors).
5. Queries whose band is wide (collapsed embeddings of an untrained model: everything within the
   bf16 error of everything) are re-ranked by a float64 GEMM instead, then step 4. The bound
   uses max |g| over the gallery, so the screen is tight for unit-norm embeddings (CLIP) and
   loose, hence slower but still exact, when gallery norms vary a lot.
6. Query chunks run on `workers` single-threaded threads (one per core): no OpenMP barrier per
   elementwise op, which on a shared machine stalls whenever one thread is descheduled.

Written by hand because nothing fits: FAISS / torch top-k give top-k lists with arbitrary tie
order and no full ranks, and fp32 brute force is 2.5x slower on CPUs with AVX512-BF16 / AMX.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

log = logging.getLogger(__name__)

__all__ = ["screened_ranks", "ScreenStats", "bf16_gemm_within_bound"]

_U32 = 2.0**-24  # unit roundoff of float32
_U64 = 2.0**-53  # unit roundoff of float64
_FLUSH = 2.0**-100  # bf16 inputs smaller than this are set to 0 (no subnormals: DAZ-safe)
_HUGE = 2.0**100  # pushes padding / queries without positives far outside any band
_SAFE_NORM = 2.0**60  # larger norms could overflow fp32 accumulation: those go to float64
_BLOCK = 256  # gallery items per counting block: 64 int64 words of 4 packed int16 flags
_TILE = 2048  # gallery items per GEMM tile (multiple of _BLOCK): 4 MB tiles stay in cache
_RECHECK_BATCH = 32768  # band pairs re-scored per float64 gather (bounded memory)
_VECTOR_EXACT_MIN = 64  # below this many undecided pairs, math.fsum per pair is cheaper


@dataclass
class ScreenStats:
    """What the screening did: pairs re-scored in float64, pairs decided exactly, queries ranked
    by the float64 fallback GEMM."""

    band_pairs: int = 0
    exact_pairs: int = 0
    fallback_queries: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "band_pairs": self.band_pairs,
            "exact_pairs": self.exact_pairs,
            "fallback_queries": self.fallback_queries,
            **self.extra,
        }


def _check_lane_order() -> None:
    probe = torch.tensor([1, 0, 0, 0], dtype=torch.int16).view(torch.int64).item()
    if probe != 1:  # big-endian host: the packed-lane counting below assumes little-endian
        raise RuntimeError("screened retrieval ranks need a little-endian CPU")


def _rows_norm64(x: torch.Tensor, step: int = 8192) -> torch.Tensor:
    """Row norms in float64 without materialising a float64 copy of the whole matrix."""
    out = [x[a : a + step].double().norm(dim=1) for a in range(0, len(x), step)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def _to_bf16(x: torch.Tensor) -> torch.Tensor:
    """Round to bf16 (nearest even) and flush |v| < 2^-100 to zero so no bf16 subnormal reaches
    a kernel that treats them as zero (VDPBF16PS is DAZ); the flush is part of the measured error."""
    xb = x.to(torch.bfloat16)
    bits = xb.view(torch.int16)
    tiny = torch.tensor(_FLUSH, dtype=torch.bfloat16).view(torch.int16)
    bits.masked_fill_((bits & 0x7FFF) < tiny, 0)  # |v| < 2^-100 on the bits: cheaper than abs()
    return xb


def _residual_norm64(x: torch.Tensor, xb: torch.Tensor, step: int = 8192) -> torch.Tensor:
    """||x - bf16(x)|| per row, float64 (x - xb is exact in float32: same binade or xb == 0)."""
    out = [(x[a : a + step] - xb[a : a + step].float()).double().norm(dim=1) for a in range(0, len(x), step)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def _round_up_bf16(x: torch.Tensor) -> torch.Tensor:
    """Smallest bf16 >= x for positive finite x (float64 in, bf16 out)."""
    b = x.to(torch.bfloat16)
    low = b.double() < x
    bits = b.view(torch.int16).clone()
    bits[low] += 1  # next representable positive bf16
    return bits.view(torch.bfloat16)


@functools.lru_cache(maxsize=16)
def bf16_gemm_within_bound(k: int = 259) -> bool:
    """Check once per process that this torch/oneDNN bf16 GEMM accumulates in fp32 and rounds the
    output once (the bound in `_screen_chunk` assumes it): a probe with cancelling sums (outputs
    near 0 from terms of size 1) at the inner size k = D + 3 and the chunk / tile shapes used.
    If it fails, ranks come from float64 GEMMs (slower, still exact)."""
    gen = torch.Generator().manual_seed(0)
    k = k - 2  # the probe appends its own 2 threshold columns
    ok = True
    for c, w in ((1, _BLOCK), (1024, _BLOCK), (64, _TILE)):
        q = torch.randn(c, k, generator=gen).to(torch.bfloat16)
        g = (torch.randn(w, k, generator=gen) / k**0.5).to(torch.bfloat16)
        exact = q.double() @ g.double().T
        t = exact[:, :1].clone()
        t_hi = t.to(torch.bfloat16)
        t_lo = (t - t_hi.double()).to(torch.bfloat16)
        qa = torch.cat([q, -t_hi, -t_lo], 1)  # column 0 of the output then cancels to ~0
        ga = torch.cat([g, torch.ones(w, 2, dtype=torch.bfloat16)], 1)
        out = torch.mm(qa, ga.T).double()
        ref = qa.double() @ ga.double().T
        terms = qa.double().abs() @ ga.double().abs().T
        allowed = 2.0**-8 * out.abs() * (1 + 2.0**-7) + 2.0 * (k + 4) * _U32 * terms + 2.0**-120
        ok &= bool(((out - ref).abs() <= allowed).all())
    if not ok:
        log.warning("bf16 GEMM error exceeds the fp32-accumulation bound here: exact ranks use float64")
    return ok


def _dot64(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise dot products in float64; float32 x float32 products are exact in float64."""
    return (a.double() * b.double()).sum(1)


def _lanes(s: torch.Tensor) -> torch.Tensor:
    """Sum of the four 16-bit lanes of each int64 (each lane holds a count <= 64)."""
    return (s & 0xFFFF) + ((s >> 16) & 0xFFFF) + ((s >> 32) & 0xFFFF) + ((s >> 48) & 0xFFFF)


def _fsum_above(q: torch.Tensor, g: torch.Tensor, p: torch.Tensor) -> bool:
    """Exact test q.g > q.p: fsum of the exact float64 products is correctly rounded, so its sign
    is the sign of the real difference."""
    qq = q.double()
    terms = (qq * g.double()).tolist() + (-(qq * p.double())).tolist()
    return math.fsum(terms) > 0.0


def _exact_if_no_rounding(
    q: torch.Tensor, g: torch.Tensor, p: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Vectorised exact q.g > q.p where possible: sums the exact float64 products one at a time
    with TwoSum (Knuth), which yields each addition's rounding error exactly; pairs where every
    error is 0 had an exact float64 sum, so its sign is the true sign (ties of integer-valued or
    coarse data). Returns (certified, above)."""
    q64 = q.double()
    terms = torch.cat([q64 * g.double(), -(q64 * p.double())], 1)
    s = torch.zeros(len(terms), dtype=torch.float64)
    exact = torch.ones(len(terms), dtype=torch.bool)
    for b in terms.T:
        t = s + b
        bp = t - s
        exact &= ((s - (t - bp)) + (b - bp)) == 0
        s = t
    return exact, s > 0


class _Exact:
    """Shared state: float32 inputs, float64 norms and the exact-decision helpers."""

    def __init__(self, q: torch.Tensor, g: torch.Tensor, stats: ScreenStats) -> None:
        self.q, self.g, self.stats = q, g, stats
        self.d = q.shape[1]
        self.lock = threading.Lock()
        self.qn = _rows_norm64(q) * (1 + 2.0**-40)
        self.gn = _rows_norm64(g) * (1 + 2.0**-40)
        # float64 dot error bound per unit |q||g|: gamma_D = D u / (1 - D u), doubled for safety
        self.c64 = 2.0 * (self.d + 2) * _U64

    def decide(self, qi: torch.Tensor, gj: torch.Tensor, pj: torch.Tensor) -> torch.Tensor:
        """Exact q_i.g_j > q_i.p_j for pairs whose float64 scores could not decide it."""
        out = torch.zeros(len(qi), dtype=torch.bool)
        if not len(qi):
            return out
        same = (self.g[gj] == self.g[pj]).all(1)  # identical vectors: an exact tie, not above
        todo = (~same).nonzero().flatten()
        with self.lock:
            self.stats.exact_pairs += len(todo)
        if len(todo) >= _VECTOR_EXACT_MIN:  # many (integer-valued data): certify in bulk first
            certain, up = [], []
            for a in range(0, len(todo), 4096):
                k = todo[a : a + 4096]
                c, u = _exact_if_no_rounding(self.q[qi[k]], self.g[gj[k]], self.g[pj[k]])
                certain.append(c)
                up.append(u)
            cert = torch.cat(certain)
            out[todo[cert]] = torch.cat(up)[cert]
            todo = todo[~cert]
        for k in todo.tolist():
            out[k] = _fsum_above(self.q[qi[k]], self.g[gj[k]], self.g[pj[k]])
        return out

    def above(self, qi: torch.Tensor, gj: torch.Tensor, pj: torch.Tensor, t64: torch.Tensor) -> torch.Tensor:
        """Exact q_i.g_j > q_i.p_j (t64 = float64 q_i.p_j), re-scoring in float64 first."""
        res = []
        for a in range(0, len(qi), _RECHECK_BATCH):
            i, j, p = qi[a : a + _RECHECK_BATCH], gj[a : a + _RECHECK_BATCH], pj[a : a + _RECHECK_BATCH]
            diff = _dot64(self.q[i], self.g[j]) - t64[a : a + _RECHECK_BATCH]
            err = self.c64 * self.qn[i] * (self.gn[j] + self.gn[p]) * (1 + 2.0**-20)
            up = diff > err
            amb = (diff.abs() <= err).nonzero().flatten()
            if len(amb):
                up[amb] = self.decide(i[amb], j[amb], p[amb])
            res.append(up)
        return torch.cat(res) if res else torch.zeros(0, dtype=torch.bool)

    def best_positive(
        self, qrows: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, n: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(gallery index of the exact best positive, its float64 score) for n local queries;
        -1 / -inf where a query has no positive. qrows: global query row per local row."""
        ng = self.g.shape[0]
        t64 = torch.full((n,), -torch.inf, dtype=torch.float64)
        pstar = torch.full((n,), -1, dtype=torch.int64)
        if not len(rows):
            return pstar, t64
        s = _dot64(self.q[qrows[rows]], self.g[cols])
        t64.scatter_reduce_(0, rows, s, reduce="amax")
        cand = torch.where(s == t64[rows], cols, torch.full_like(cols, ng))
        first = torch.full((n,), ng, dtype=torch.int64).scatter_reduce_(0, rows, cand, reduce="amin")
        has = first < ng
        pstar[has] = first[has]
        # positives whose float64 score is within the float64 error of the max may truly be larger
        err = self.c64 * self.qn[qrows[rows]] * (self.gn[cols] + self.gn[pstar[rows]]) * (1 + 2.0**-20)
        near = (s >= t64[rows] - err) & (cols != pstar[rows])
        near_idx = near.nonzero().flatten()
        if len(near_idx):
            same = (self.g[cols[near_idx]] == self.g[pstar[rows[near_idx]]]).all(1)
            near_idx = near_idx[~same]
        for r in torch.unique(rows[near_idx]).tolist():
            qv = self.q[qrows[r]]
            best = int(pstar[r])
            for k in near_idx[rows[near_idx] == r].tolist():
                with self.lock:
                    self.stats.exact_pairs += 1
                if _fsum_above(qv, self.g[cols[k]], self.g[best]):
                    best = int(cols[k])
            pstar[r] = best
            t64[r] = _dot64(qv[None], self.g[best][None])[0]
        return pstar, t64


def _screen_chunk(
    ex: _Exact,
    prep: dict[str, Any],
    qrows: torch.Tensor,
    pstar: torch.Tensor,
    t64: torch.Tensor,
    buf: torch.Tensor,
    work: torch.Tensor,
    band_cap: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """bf16 screen of one query chunk: (#surely above, band rows, band cols, rows needing the
    float64 fallback) with rows local to the chunk."""
    q = ex.q[qrows]
    c, d = q.shape
    ng, gp, k = prep["ng"], prep["g_aug"].shape[0], prep["g_aug"].shape[1]
    has = pstar >= 0
    qb = _to_bf16(q)
    dqn = _residual_norm64(q, qb)
    qn = ex.qn[qrows]
    t = torch.where(has, t64, torch.zeros_like(t64))
    t_hi = t.to(torch.bfloat16)
    t_lo = (t - t_hi.double()).to(torch.bfloat16)
    split_err = (t_hi.double() + t_lo.double() - t).abs()
    e_star = ex.c64 * qn * torch.where(has, ex.gn[pstar.clamp(min=0)], torch.zeros_like(qn))
    gmax, dgmax = prep["gmax"], prep["dgmax"]
    e_in = qn * dgmax + dqn * gmax + dqn * dgmax
    e_acc = 2.0 * (k + 2) * _U32 * ((qn + dqn) * (gmax + dgmax) + t_hi.double().abs() + t_lo.double().abs())
    bound = (e_in + e_acc + split_err + e_star) * (1 + 2.0**-20) + 2.0 * (k + 3) * 2.0**-126
    a_bf = _round_up_bf16((1 + 2.0**-7) * bound + 2.0**-120)
    a_bits = a_bf.view(torch.int16)[:, None]

    q_aug = torch.zeros(c, k, dtype=torch.bfloat16)
    q_aug[:, :d] = qb
    q_aug[:, d] = torch.where(has, -t_hi.float(), torch.full((c,), _HUGE)).to(torch.bfloat16)
    q_aug[:, d + 1] = torch.where(has, -t_lo.float(), torch.zeros(c)).to(torch.bfloat16)
    q_aug[:, d + 2] = 1.0

    above = torch.zeros(c, dtype=torch.int64)
    band_n = torch.zeros(c, dtype=torch.int64)
    band_rows: list[torch.Tensor] = []
    band_cols: list[torch.Tensor] = []
    for j0 in range(0, gp, _TILE):
        w = min(_TILE, gp - j0)
        nb = w // _BLOCK
        tile = buf[: c * w].view(c, w)
        torch.mm(q_aug, prep["g_aug"][j0 : j0 + w].T, out=tile)
        bits = tile.view(torch.int16)
        flags = work[: c * w].view(c, w)
        # surely above: out > A  <=>  bits > bits(A) (A > 0; negative bf16 are negative int16).
        # In-place ops on a copy + packed int64 sums: ~3x cheaper than torch's bool compare + sum.
        flags.copy_(bits).gt_(a_bits)
        above += _lanes(flags.view(torch.int64).sum(1))  # lanes hold <= w/4 <= 2048 each
        # band: |out| <= A  <=>  (bits & 0x7FFF) <= bits(A), in place on the tile
        bits.bitwise_and_(0x7FFF).le_(a_bits)
        words = bits.view(torch.int64).view(c, nb, 64)
        packed = words.sum(2)  # (c, nb): 4 lanes of per-block band counts (<= 64 each)
        band_n += _lanes(packed.sum(1))
        packed[band_n > band_cap] = 0  # rows bound for the float64 fallback: stop collecting
        r, blk = packed.nonzero(as_tuple=True)
        if len(r):
            hit = words[r, blk]  # (n, 64) words of the blocks holding band items
            hr, hw = hit.nonzero(as_tuple=True)
            v = hit[hr, hw]
            base = j0 + blk[hr] * _BLOCK + hw * 4
            rr = r[hr]
            for lane in range(4):
                m = ((v >> (16 * lane)) & 1).bool()
                band_rows.append(rr[m])
                band_cols.append(base[m] + lane)
    fallback = has & (band_n > band_cap)
    rows = torch.cat(band_rows) if band_rows else torch.zeros(0, dtype=torch.int64)
    cols = torch.cat(band_cols) if band_cols else torch.zeros(0, dtype=torch.int64)
    keep = (cols < ng) & has[rows] & ~fallback[rows]
    return above, rows[keep], cols[keep], fallback


def _fallback64(ex: _Exact, qrows: torch.Tensor, pstar: torch.Tensor, t64: torch.Tensor) -> torch.Tensor:
    """#gallery items exactly above the best positive, via float64 GEMMs (for wide-band queries)."""
    ng = ex.g.shape[0]
    q64 = ex.q[qrows].double()
    gmax = float(ex.gn.max()) if ng else 0.0
    err = (ex.c64 * ex.qn[qrows] * (gmax + ex.gn[pstar])) * (1 + 2.0**-20)
    above = torch.zeros(len(qrows), dtype=torch.int64)
    step = max(256, (4 << 20) // max(len(qrows), 1))  # <= 32 MB of float64 scores per step
    band_r, band_c = [], []
    for j0 in range(0, ng, step):
        diff = q64 @ ex.g[j0 : j0 + step].double().T - t64[:, None]
        above += (diff > err[:, None]).sum(1)
        r, cc = (diff.abs() <= err[:, None]).nonzero(as_tuple=True)
        band_r.append(r)
        band_c.append(cc + j0)
    r = torch.cat(band_r)
    cc = torch.cat(band_c)
    up = ex.decide(qrows[r], cc, pstar[r])
    above.index_add_(0, r, up.to(torch.int64))
    return above


def screened_ranks(
    query: torch.Tensor,
    gallery: torch.Tensor,
    pairs: Callable[[int, int], tuple[Any, Any, Any]],
    ranks: Any,
    *,
    chunk: int = 1024,
    band_cap: int | None = None,
    stats: ScreenStats | None = None,
    workers: int | None = None,
) -> ScreenStats:
    """Fill `ranks` (numpy int64, (Q,)) with exact ranks: 1 + #gallery items whose real dot product
    with the query is strictly above the best positive's; 0 for queries without a positive.

    query (Q, D), gallery (G, D): float32 tensors, finite. pairs(a, b) -> (local rows, gallery
    cols, has_positive) lists the relevant pairs of query rows a..b (see metrics._positive_pairs).
    band_cap: queries with more ambiguous items than this are re-ranked by float64 GEMM
    (default max(1024, G/16): about where gathering rows costs more than the GEMM row).
    workers: query chunks processed concurrently, each single-threaded (default: torch's thread
    count; torch's setting is restored afterwards).
    """
    _check_lane_order()
    st = stats if stats is not None else ScreenStats()
    nq, ng = query.shape[0], gallery.shape[0]
    if not (nq and ng):
        return st
    for name, x in (("query", query), ("gallery", gallery)):
        # a NaN/inf anywhere makes the sum non-finite: one cheap pass (exact check if it overflowed)
        if not math.isfinite(float(x.sum())) and not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x).all(1)).nonzero()[0])
            raise ValueError(f"retrieval_ranks: {name} row {bad} has NaN or inf; embeddings must be finite")
    ex = _Exact(query, gallery, st)
    d = query.shape[1]
    cap = int(band_cap if band_cap is not None else max(1024, ng // 16))
    gmax, qmax = float(ex.gn.max()), float(ex.qn.max())
    # |q||g| <= 2^60 keeps fp32 accumulation finite; norms <= 2^100 keep every entry finite in bf16
    safe = gmax * qmax <= _SAFE_NORM and max(gmax, qmax) <= _HUGE and bf16_gemm_within_bound(d + 3)
    if not safe:
        st.extra["screen"] = "off (|q||g| > 2^60, a norm > 2^100 or bf16 GEMM check failed): float64 GEMM"
    prep: dict[str, Any] = {"ng": ng}
    if safe:
        gb = _to_bf16(gallery)
        gp = -(-ng // _BLOCK) * _BLOCK
        g_aug = torch.zeros(gp, d + 3, dtype=torch.bfloat16)
        g_aug[:ng, :d] = gb
        g_aug[:ng, d : d + 2] = 1.0
        g_aug[ng:, d + 2] = -_HUGE  # padding rows score -2^100: never above, never in the band
        prep.update(
            g_aug=g_aug,
            gmax=float(ex.gn.max()),
            dgmax=float(_residual_norm64(gallery, gb).max()) * (1 + 2.0**-40),
        )
        del gb
    c = int(min(chunk, nq))
    w = min(_TILE, prep["g_aug"].shape[0]) if safe else 0
    lock = threading.Lock()
    local = threading.local()

    def run_chunk(a: int) -> None:
        with torch.inference_mode():
            b = min(a + chunk, nq)
            qrows = torch.arange(a, b)
            rows, cols, _ = pairs(a, b)
            pstar, t64 = ex.best_positive(qrows, rows, cols, b - a)
            has = pstar >= 0
            if safe:
                if not hasattr(local, "buf"):  # per-worker tile buffers, reused across chunks
                    local.buf = torch.empty(c * w, dtype=torch.bfloat16)
                    local.work = torch.empty(c * w, dtype=torch.int16)
                above, br, bc, fallback = _screen_chunk(
                    ex, prep, qrows, pstar, t64, local.buf, local.work, cap
                )
                above.index_add_(0, br, ex.above(qrows[br], bc, pstar[br], t64[br]).to(torch.int64))
            else:
                above, br = torch.zeros(b - a, dtype=torch.int64), torch.zeros(0)
                fallback = has
            fb = fallback.nonzero().flatten()
            if len(fb):
                above[fb] = _fallback64(ex, qrows[fb], pstar[fb], t64[fb])
            ranks[a:b] = torch.where(has, above + 1, torch.zeros_like(above)).numpy()
            with lock:
                st.band_pairs += len(br)
                st.fallback_queries += len(fb)

    starts = list(range(0, nq, chunk))
    n_workers = max(1, min(int(workers or torch.get_num_threads()), len(starts)))
    if n_workers == 1:
        for a in starts:
            run_chunk(a)
        return st
    # One single-threaded worker per core, each on its own query chunks: no OpenMP barrier per
    # elementwise op (a dozen per tile), which on a shared machine stalls whenever one thread is
    # descheduled. torch ops release the GIL, so the workers' GEMMs run concurrently.
    old_threads = torch.get_num_threads()

    def run_single(a: int) -> None:
        torch.set_num_threads(1)  # OpenMP's thread count is per calling thread: set it in each
        run_chunk(a)

    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(n_workers) as pool:
            list(pool.map(run_single, starts))
    finally:
        torch.set_num_threads(old_threads)
    return st
