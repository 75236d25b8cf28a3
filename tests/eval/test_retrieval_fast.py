"""The bf16-screened exact retrieval ranks (`method="exact"`) against a brute-force reference in
exact arithmetic: float64 scores, with every score within 1e-9 of a query's threshold re-decided
by `fractions.Fraction` (so the reference has no rounding at all). Covers exact ties, near-ties
inside the bf16 error band (1e-4 .. 1e-8), duplicate gallery vectors, multiple (near-tied)
positives, queries without positives, non-normalised / huge / tiny inputs, collapsed embeddings
(float64 fallback), bad input, and the bf16 GEMM error bound the screen relies on."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sonofm.stats import metrics as M
from sonofm.stats.exact_ranks import ScreenStats, bf16_gemm_within_bound, screened_ranks

pytestmark = pytest.mark.usefixtures("one_thread")


def exact_dot(a: np.ndarray, b: np.ndarray) -> Fraction:
    return sum((Fraction(float(x)) * Fraction(float(y)) for x, y in zip(a, b, strict=True)), Fraction(0))


def reference_ranks(q: np.ndarray, g: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """1 + #gallery items whose REAL dot product with the float32 query exceeds the best
    positive's; 0 without positives. float64 decides clear cases (its error is < 1e-13 |q||g|),
    Fractions decide everything within 1e-9 |q| max|g| of the threshold."""
    q32, g32 = np.asarray(q, np.float32), np.asarray(g, np.float32)
    s = q32.astype(np.float64) @ g32.astype(np.float64).T
    gmax = float(np.linalg.norm(g32.astype(np.float64), axis=1).max())
    out = np.zeros(len(q32), dtype=np.int64)
    for i in range(len(q32)):
        pos = np.flatnonzero(rel[i])
        if not len(pos):
            continue
        t = max(exact_dot(q32[i], g32[j]) for j in pos)
        tol = 1e-9 * float(np.linalg.norm(q32[i].astype(np.float64))) * gmax
        near = np.flatnonzero(np.abs(s[i] - float(t)) <= tol)
        clear = int((s[i] > float(t) + tol).sum())
        out[i] = 1 + clear + sum(exact_dot(q32[i], g32[j]) > t for j in near)
    return out


def ranks_with_stats(q, g, relevance, **kw):
    info = M.RankInfo("?", False)
    r = M.retrieval_ranks(q, g, relevance, info=info, **kw)
    assert info.method == "exact" and info.exact
    return r, info.stats


def assert_same_metrics(ours: np.ndarray, ref: np.ndarray) -> None:
    assert np.array_equal(ours, ref), np.flatnonzero(ours != ref)[:10]
    if (ref > 0).any():
        with np.errstate(all="ignore"):
            for k in (1, 5, 10):
                assert M.recall_at_k(ours[ours > 0], k) == M.recall_at_k(ref[ref > 0], k)
            assert M.rank_summary(ours[ours > 0]) == M.rank_summary(ref[ref > 0])


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1])
def test_random_multi_positive_keys_and_dense_all_chunks(seed):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(6, 48))
    g = _unit(centres[rng.integers(0, 6, 700)] + 0.7 * rng.normal(size=(700, 48)))
    q = _unit(centres[rng.integers(0, 6, 150)] + 0.7 * rng.normal(size=(150, 48)))
    qk, gk = rng.integers(0, 60, 150), rng.integers(0, 55, 700)  # keys 55..59: no positive
    rel = qk[:, None] == gk[None, :]
    ref = reference_ranks(q, g, rel)
    assert (ref == 0).any() and (rel.sum(1) > 1).any()
    for chunk in (7, 64, None):
        ours, stats = ranks_with_stats(q, g, (qk, gk), chunk=chunk)
        assert_same_metrics(ours, ref)
        assert stats["band_pairs"] > 0  # the bf16 screen left something for the exact re-check
        assert np.array_equal(M.retrieval_ranks(q, g, rel, chunk=chunk), ref)
    # generic data (no near-ties at fp32 level): the former fp32 path agrees too
    assert np.array_equal(M.retrieval_ranks(q, g, (qk, gk), method="fp32"), ref)


def test_near_ties_inside_the_bf16_band():
    """Gallery items g = p + eps * q / |q|^2 score exactly eps above the positive p (before
    float32 rounding of g): eps from 1e-4 (inside the bf16 band) down to 1e-8 (fp32 noise)."""
    rng = np.random.default_rng(3)
    d, nq = 64, 40
    q = rng.normal(size=(nq, d))
    q[:, 0] = 0.0  # a coordinate the queries ignore
    q = _unit(q)
    p = _unit(rng.normal(size=(nq, d)))
    eps = np.array([1e-4, -1e-4, 3e-5, -3e-5, 1e-6, -1e-6, 1e-7, -1e-7, 1e-8, -1e-8, 0.0])
    near = (p[:, None, :] + eps[None, :, None] * q[:, None, :]).reshape(-1, d).astype(np.float32)
    # exact ties that are not bitwise copies: p changed only where q is 0 (float64 cannot tell
    # these from a 1e-16 difference: they reach the exactly-rounded summation)
    twin = np.concatenate([p, p])
    twin[:nq, 0] += 0.5
    twin[nq:, 0] -= 0.25
    noise = _unit(rng.normal(size=(300, d)))
    g = np.concatenate([p, near, twin, noise]).astype(np.float32)
    gk = np.concatenate([np.arange(nq), -np.ones(len(near) + len(twin) + len(noise), int)])
    qk = np.arange(nq)
    rel = qk[:, None] == gk[None, :]
    ref = reference_ranks(q, g, rel)
    ours, stats = ranks_with_stats(q, g, (qk, gk))
    assert_same_metrics(ours, ref)
    # every query has ~11 items within 1e-4 of its positive: all went through the re-check
    assert stats["band_pairs"] >= nq * len(eps)
    assert stats["exact_pairs"] >= 2 * nq  # the twins: decided by exact summation (ties)
    assert ref.max() > 3  # the constructed near-ties above the positive were counted


def test_exact_ties_duplicates_and_integer_vectors():
    # integer vectors: many exact ties; every gallery item has a bitwise duplicate
    rng = np.random.default_rng(5)
    q = rng.integers(-2, 3, size=(120, 6)).astype(np.float32)
    g = rng.integers(-2, 3, size=(300, 6)).astype(np.float32)
    g[150:] = g[:150]
    qk, gk = rng.integers(0, 25, 120), rng.integers(0, 25, 300)
    rel = qk[:, None] == gk[None, :]
    s = q @ g.T
    best = np.where(rel, s, -np.inf).max(1)
    assert ((s == best[:, None]) & ~rel).any()  # irrelevant items tied with the best positive
    ref = reference_ranks(q, g, rel)
    for chunk in (5, None):
        ours, stats = ranks_with_stats(q, g, (qk, gk), chunk=chunk)
        assert_same_metrics(ours, ref)
    assert stats["exact_pairs"] > 0


def test_binary_codes_massive_ties():
    """0/1 vectors (hash codes): thousands of exact ties, certified in bulk (every float64
    addition exact) instead of one math.fsum per pair."""
    rng = np.random.default_rng(8)
    q = rng.integers(0, 2, size=(60, 12)).astype(np.float32)
    g = rng.integers(0, 2, size=(400, 12)).astype(np.float32)
    qk, gk = rng.integers(0, 40, 60), rng.integers(0, 40, 400)
    rel = qk[:, None] == gk[None, :]
    ref = reference_ranks(q, g, rel)
    ours, stats = ranks_with_stats(q, g, (qk, gk))
    assert_same_metrics(ours, ref)
    assert stats["exact_pairs"] > 1000


def test_duplicates_of_the_positive_tie_and_permuted_positives():
    """Irrelevant exact copies of the positive tie with it (rank unaffected); positives that are
    coordinate permutations score identically in exact arithmetic without being equal bitwise."""
    rng = np.random.default_rng(11)
    d = 32
    q = np.ones((5, d), np.float32) / np.sqrt(d)  # constant queries: permutations tie exactly
    base = rng.normal(size=(5, d)).astype(np.float32)
    perm = base[:, rng.permutation(d)]
    other = rng.normal(size=(50, d)).astype(np.float32)
    g = np.concatenate([base, base, perm, other])  # copies of each positive: irrelevant
    gk = np.concatenate([np.arange(5), -np.ones(5, int), np.arange(5), -np.ones(50, int)])
    rel = np.arange(5)[:, None] == gk[None, :]
    ref = reference_ranks(q, g, rel)
    ours, _ = ranks_with_stats(q, g, (np.arange(5), gk))
    assert_same_metrics(ours, ref)


def test_best_positive_is_exact_where_float64_misorders_positives():
    """q.p1 = 2^60 + 1 - 2^60 = 1 exactly, but float64 loses the 1 (sums to 0), so it would
    take p2 (0.5) as the best positive and count the irrelevant item at 0.75 as above it."""
    big = np.float32(2.0**30)
    q = np.array([[big, 1.0, big]], np.float32)
    g = np.array([[big, 1.0, -big], [0.0, 0.5, 0.0], [0.0, 0.75, 0.0], [0.0, 2.0, 0.0]], np.float32)
    rel = np.array([[True, True, False, False]])
    assert float(q[0].astype(np.float64) @ g[0].astype(np.float64)) == 0.0  # float64 is wrong here
    ref = reference_ranks(q, g, rel)
    assert ref.tolist() == [2]  # only the item at 2.0 is above the true best positive (1.0)
    ours, _ = ranks_with_stats(q, g, rel)
    assert ours.tolist() == [2]


def test_queries_without_positives_get_rank_zero():
    rng = np.random.default_rng(2)
    q, g = _unit(rng.normal(size=(20, 16))), _unit(rng.normal(size=(40, 16)))
    qk, gk = np.arange(20), np.arange(40) + 10  # queries 0..9 have no positive
    ours, _ = ranks_with_stats(q, g, (qk, gk))
    assert (ours[:10] == 0).all() and (ours[10:] >= 1).all()
    assert_same_metrics(ours, reference_ranks(q, g, qk[:, None] == gk[None, :]))
    with pytest.warns(M.MetricWarning):
        M.recall_at_k(ours, 1)
    none, _ = ranks_with_stats(q, g, (qk + 1000, gk))
    assert (none == 0).all()


@pytest.mark.parametrize("scale", ["mixed", "huge", "tiny"])
def test_non_normalised_inputs(scale):
    """The bound scales with |q| and max |g| (it is not assuming unit vectors); norms whose
    product passes 2^60 skip the bf16 screen (fp32 accumulation could overflow) for float64."""
    rng = np.random.default_rng(7)
    q = rng.normal(size=(60, 24))
    g = rng.normal(size=(200, 24))
    if scale == "mixed":
        q *= 10.0 ** rng.uniform(-3, 3, size=(60, 1))
        g *= 10.0 ** rng.uniform(-1, 1, size=(200, 1))
    elif scale == "huge":
        q, g = q * 1e15, g * 1e12
    else:
        q, g = q * 1e-20, g * 1e-15
    q, g = q.astype(np.float32), g.astype(np.float32)
    qk, gk = rng.integers(0, 30, 60), rng.integers(0, 30, 200)
    ref = reference_ranks(q, g, qk[:, None] == gk[None, :])
    ours, stats = ranks_with_stats(q, g, (qk, gk))
    assert_same_metrics(ours, ref)
    assert ("screen" in stats) == (scale == "huge")


def test_collapsed_embeddings_use_the_float64_fallback():
    """An untrained model maps everything to nearly one vector: every item is inside the bf16
    band, so queries over `band_cap` are re-ranked by float64 GEMM, still exactly."""
    rng = np.random.default_rng(4)
    v = rng.normal(size=32)
    g = _unit(v + 1e-4 * rng.normal(size=(300, 32)))
    q = _unit(v + 1e-4 * rng.normal(size=(30, 32)))
    qk, gk = np.arange(30) % 10, np.arange(300) % 13
    rel = qk[:, None] == gk[None, :]
    ref = reference_ranks(q, g, rel)
    pairs = M._positive_pairs((qk, gk), 30, 300)
    out = np.zeros(30, dtype=np.int64)
    stats = screened_ranks(torch.as_tensor(q), torch.as_tensor(g), pairs, out, chunk=8, band_cap=20)
    assert stats.fallback_queries == 30
    assert_same_metrics(out, ref)
    ours, _ = ranks_with_stats(q, g, rel)  # default cap: the gathered re-check path
    assert_same_metrics(ours, ref)


def test_concurrent_workers_match_and_restore_threads():
    rng = np.random.default_rng(9)
    g = _unit(rng.normal(size=(500, 32)))
    q = _unit(g[:90] + 0.3 * rng.normal(size=(90, 32)))
    qk, gk = np.arange(90) % 70, np.arange(500) % 80
    rel = qk[:, None] == gk[None, :]
    ref = reference_ranks(q, g, rel)
    out = np.zeros(90, dtype=np.int64)
    pairs = M._positive_pairs((qk, gk), 90, 500)
    torch.set_num_threads(2)  # workers run single-threaded; the caller's setting comes back
    stats = screened_ranks(torch.as_tensor(q), torch.as_tensor(g), pairs, out, chunk=16, workers=3)
    assert torch.get_num_threads() == 2
    assert_same_metrics(out, ref)
    assert stats.band_pairs > 0


def test_bad_input_and_empty():
    q = np.ones((3, 4), np.float32)
    g = np.ones((5, 4), np.float32)
    g[2, 1] = np.nan
    with pytest.raises(ValueError, match="gallery row 2"):
        M.retrieval_ranks(q, g, np.ones((3, 5), bool))
    q[1, 0] = np.inf
    with pytest.raises(ValueError, match="query row 1"):
        M.retrieval_ranks(q, np.ones((5, 4)), np.ones((3, 5), bool))
    assert M.retrieval_ranks(np.zeros((0, 4)), np.ones((5, 4)), np.zeros((0, 5), bool)).shape == (0,)
    assert M.retrieval_ranks(np.ones((2, 4)), np.zeros((0, 4)), np.zeros((2, 0), bool)).tolist() == [0, 0]
    stats = ScreenStats()
    pairs = M._positive_pairs((np.zeros(0), np.zeros(5)), 0, 5)
    assert screened_ranks(torch.zeros(0, 4), torch.ones(5, 4), pairs, [], stats=stats) is stats
    assert stats.to_dict() == {"band_pairs": 0, "exact_pairs": 0, "fallback_queries": 0}


def test_bf16_gemm_error_bound_holds_here():
    """The screen assumes torch's CPU bf16 GEMM accumulates in fp32 and rounds the output once:
    |out - exact| <= 2^-8 |out| + 2 (K+2) 2^-24 sum|terms|. Checked on outputs cancelling to ~0
    (where rounding partial sums to bf16 would show) at the shapes the ranker uses."""
    assert bf16_gemm_within_bound(259) and bf16_gemm_within_bound(3 + 3)
    rng = torch.Generator().manual_seed(1)
    k = 259
    for c, w in ((1, 256), (3, 8192), (1024, 512)):
        q = torch.randn(c, k, generator=rng).bfloat16()
        g = (torch.randn(w, k, generator=rng) / 16).bfloat16()
        out = torch.mm(q, g.T).double()
        ref = q.double() @ g.double().T
        terms = q.double().abs() @ g.double().abs().T
        allowed = 2.0**-8 * out.abs() * (1 + 2.0**-7) + 2.0 * (k + 2) * 2.0**-24 * terms
        assert ((out - ref).abs() <= allowed).all()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    nq=st.integers(1, 12),
    ng=st.integers(1, 40),
    d=st.integers(1, 9),
    n_keys=st.integers(1, 6),
)
def test_property_matches_exact_reference(data, nq, ng, d, n_keys):
    """Small vectors from a few float32 values (heavy ties, zeros, negative zero, repeated rows)."""
    vals = st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, 0.1, -0.3, 1e-3, 3.0, 1 / 3])
    q = np.array(data.draw(st.lists(vals, min_size=nq * d, max_size=nq * d)), np.float32).reshape(nq, d)
    g = np.array(data.draw(st.lists(vals, min_size=ng * d, max_size=ng * d)), np.float32).reshape(ng, d)
    qk = np.array(data.draw(st.lists(st.integers(0, n_keys), min_size=nq, max_size=nq)))
    gk = np.array(data.draw(st.lists(st.integers(0, n_keys), min_size=ng, max_size=ng)))
    rel = qk[:, None] == gk[None, :]
    ref = reference_ranks(q, g, rel)
    assert np.array_equal(M.retrieval_ranks(q, g, (qk, gk), chunk=5), ref)
    assert np.array_equal(M.retrieval_ranks(q, g, rel), ref)
