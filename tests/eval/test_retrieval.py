"""Retrieval ranks: chunked exact ranks equal a brute-force sort (multiple positives, exact ties,
chunk sizes, dense vs key relevance), R@K equals CLIP_benchmark's top-k formula, and the FAISS IVF
path agrees with the exact one on clustered embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sonofm.stats import metrics as M


def brute_ranks(q: np.ndarray, g: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """Reference: full score matrix, rank = 1 + #items strictly above the best positive."""
    s = q.astype(np.float32) @ g.astype(np.float32).T
    out = np.zeros(len(q), dtype=np.int64)
    for i in range(len(q)):
        if rel[i].any():
            out[i] = 1 + int((s[i] > s[i][rel[i]].max()).sum())
    return out


def clip_benchmark_recall(q: np.ndarray, g: np.ndarray, rel: np.ndarray, k: int) -> float:
    """CLIP_benchmark's recall_at_k: a query counts if ANY positive is among its top-k indices."""
    scores = torch.as_tensor(q @ g.T)
    topk = scores.topk(k, dim=1).indices
    onehot = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, topk, True)
    hit = (onehot & torch.as_tensor(rel)).any(1)
    return float(hit[torch.as_tensor(rel).any(1)].float().mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_equals_brute_force_random_multi_positive(seed):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(203, 24)).astype(np.float32)
    g = rng.normal(size=(311, 24)).astype(np.float32)
    qk, gk = rng.integers(0, 50, 203), rng.integers(0, 45, 311)  # ~7 positives; keys 45-49: none
    rel = qk[:, None] == gk[None, :]
    want = brute_ranks(q, g, rel)
    assert (want == 0).any() and (rel.sum(1) > 1).any()
    for chunk in (5, 64, None):
        assert np.array_equal(M.retrieval_ranks(q, g, (qk, gk), chunk=chunk), want)
        assert np.array_equal(M.retrieval_ranks(q, g, rel, chunk=chunk), want)
    for k in (1, 5, 10):
        with pytest.warns(M.MetricWarning):  # queries without positives are dropped, loudly
            ours = M.recall_at_k(want, k)
        assert ours == pytest.approx(clip_benchmark_recall(q, g, rel, k))


def test_exact_ties_integer_embeddings():
    # small integer vectors: every dot product is exact in fp32 whatever the summation order,
    # so ties are real ties and the tie rule (ties with the best positive favour the query) is tested
    rng = np.random.default_rng(5)
    q = rng.integers(-2, 3, size=(150, 6)).astype(np.float32)
    g = rng.integers(-2, 3, size=(400, 6)).astype(np.float32)
    g[200:] = g[:200]  # every gallery item has an exact duplicate
    qk, gk = rng.integers(0, 30, 150), rng.integers(0, 30, 400)
    rel = qk[:, None] == gk[None, :]
    s = q @ g.T
    best = np.where(rel, s, -np.inf).max(1)
    assert ((s == best[:, None]) & ~rel).any()  # negatives tied with the best positive exist
    want = brute_ranks(q, g, rel)
    for chunk in (3, 50, None):
        assert np.array_equal(M.retrieval_ranks(q, g, (qk, gk), chunk=chunk), want)


def test_hand_built_ties_and_positives():
    q = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    g = np.array([[1.0, 0.0], [1.0, 0.0], [0.5, 0.0], [0.0, 1.0], [0.0, 2.0]])
    rel = np.array(
        [
            [False, True, False, False, False],  # positive tied with a negative at 1.0 -> rank 1
            [False, False, False, True, False],  # g4 (score 2) is above the positive -> rank 2
            [False, False, True, True, True],  # best positive g4 scores 2: nothing above -> rank 1
        ]
    )
    assert M.retrieval_ranks(q, g, rel).tolist() == [1, 2, 1]
    keys_q, keys_g = np.array(["a", "b", "c"]), np.array(["x", "a", "c", "b", "c"])
    rel_k = keys_q[:, None] == keys_g[None, :]
    assert M.retrieval_ranks(q, g, (keys_q, keys_g)).tolist() == brute_ranks(q, g, rel_k).tolist()
    # a query tied with everything: rank 1, never worse
    assert M.retrieval_ranks(np.zeros((1, 2)), g, np.ones((1, 5), bool)).tolist() == [1]


def test_errors_and_info():
    q, g = np.eye(3), np.eye(3)
    with pytest.raises(ValueError, match="method"):
        M.retrieval_ranks(q, g, np.eye(3, dtype=bool), method="magic")
    with pytest.raises(ValueError, match="key"):
        M.retrieval_ranks(q, g, np.eye(3, dtype=bool), method="ivf")
    with pytest.raises(ValueError, match=r"\(Q, G\)"):
        M.retrieval_ranks(q, g, np.eye(2, dtype=bool))
    info = M.RankInfo("?", False)
    assert M.retrieval_ranks(q, g, (np.arange(3), np.arange(3)), info=info).tolist() == [1, 1, 1]
    assert info.method == "exact" and info.exact and info.seconds >= 0


def _clustered(rng, n_gallery, n_query, dim=32, clusters=20):
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    g = centres[rng.integers(0, clusters, n_gallery)] + 0.35 * rng.normal(size=(n_gallery, dim))
    g = (g / np.linalg.norm(g, axis=1, keepdims=True)).astype(np.float32)
    target = rng.integers(0, n_gallery, n_query)
    q = g[target] + 0.05 * rng.normal(size=(n_query, dim)).astype(np.float32)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32), g, target


def test_ivf_agrees_with_exact_on_clustered_embeddings():
    rng = np.random.default_rng(0)
    q, g, target = _clustered(rng, 3000, 500)
    keys = (target, np.arange(len(g)))
    exact = M.retrieval_ranks(q, g, keys)
    info = M.RankInfo("?", True)
    approx = M.retrieval_ranks(q, g, keys, method="ivf", info=info, ivf_k=20)
    assert info.method == "ivf" and not info.exact and info.censored_at == 21
    assert approx.max() <= 21 and approx.min() >= 1
    for k in (1, 5, 10):
        assert abs(M.recall_at_k(approx, k) - M.recall_at_k(exact, k)) <= 0.02
    # where IVF found the positive within its top k, its rank is the exact one (IVF never
    # invents scores, it can only miss items in unprobed cells, which can only lower a rank)
    found = approx <= 20
    assert (approx[found] <= exact[found]).all()
    assert np.mean(approx[found] == exact[found]) > 0.95


def test_retrieval_task_method_option():
    from sonofm.eval.tasks import Retrieval
    from tests.eval.test_tasks import _ctx, _synthetic

    df, emb = _synthetic(n_per=(4, 4, 40))
    exact = Retrieval(ks=[1, 5]).run(_ctx(df, emb))
    approx = Retrieval(ks=[1, 5], method="ivf").run(_ctx(df, emb))
    assert exact.info["ranking"]["image_to_text"]["exact"] is True
    assert approx.info["ranking"]["text_to_image"]["method"] == "ivf"
    assert not approx.info["ranking"]["text_to_image"]["exact"]
    assert "image_to_text/mean_rank" in exact.metrics and "image_to_text/mean_rank" not in approx.metrics
    # a 40-item gallery: IVF's cells cover everything probed, so it equals exact here
    for key in ("image_to_text/R@1", "text_to_image/R@5"):
        assert approx.metrics[key].value == pytest.approx(exact.metrics[key].value)
    with pytest.raises(ValueError, match="method"):
        Retrieval(method="hnsw")
