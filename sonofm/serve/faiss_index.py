"""FAISS construction for the case index: index kinds, sizes, normalisation, search knobs.

See :mod:`sonofm.serve.index` for the index directory these indexes live in.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Literal

import numpy as np

from sonofm.errors import DataError, UserError

log = logging.getLogger(__name__)


IndexKind = Literal["auto", "flat", "ivf", "hnsw"]
KINDS = ("auto", "flat", "ivf", "hnsw")
AUTO_FLAT_MAX = 50_000  # below this many vectors exact search is fast enough (< ~5 ms/query)
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 64
DEFAULT_NPROBE = 32
DEFAULT_EF_SEARCH = 128


# ---------------------------------------------------------------- FAISS construction


def _faiss() -> Any:
    import faiss  # lazy: keeps FAISS (a native library) out of `import sonofm.serve.index`

    return faiss


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """float32, C-contiguous, unit L2 rows (zero rows stay zero)."""
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim != 2:
        raise ValueError(f"vectors must be 2-D (N, D), got shape {x.shape}")
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def resolve_kind(kind: str, n: int) -> str:
    """'auto' -> 'flat' below AUTO_FLAT_MAX vectors, else 'ivf'; other kinds are validated."""
    if kind not in KINDS:
        raise UserError(f"index kind {kind!r} is not one of {', '.join(KINDS)}")
    if kind == "auto":
        return "flat" if n < AUTO_FLAT_MAX else "ivf"
    return kind


def default_nlist(n: int) -> int:
    """IVF list count ~ 4 sqrt(n), at least 1 and at most n // 39 (FAISS wants >= 39 points per list)."""
    return int(max(1, min(round(4 * math.sqrt(n)), n // 39 if n >= 39 else 1)))


def default_nprobe(nlist: int) -> int:
    """Lists visited per query: 1/8 of them, at least DEFAULT_NPROBE.

    benchmarks/index.py (1M clustered vectors, nlist 1024): recall@10 0.51 / 0.78 / 0.97 at nprobe
    8 / 32 / 128 with 0.5 / 3 / 20 ms per query vs 90 ms exact. A case search serves a person
    looking at similar cases, so the default buys recall; lower it with `set_search_params`.
    """
    return int(min(nlist, max(DEFAULT_NPROBE, nlist // 8)))


def build_faiss(
    vectors: np.ndarray,
    kind: str = "auto",
    *,
    nlist: int | None = None,
    m: int = HNSW_M,
    ef_construction: int = HNSW_EF_CONSTRUCTION,
    train_per_list: int = 64,
    seed: int = 0,
) -> tuple[Any, dict[str, Any]]:
    """A FAISS inner-product index holding `vectors` (normalised here) with ids 0..N-1, and its params.

    IVF's coarse quantizer is k-means trained on a random sample of `train_per_list * nlist`
    vectors (all of them when fewer): the sample, not N, bounds the training cost at 1M vectors.
    """
    faiss = _faiss()
    x = normalize_rows(vectors)
    n, d = x.shape
    if n == 0:
        raise DataError("cannot build an index from zero vectors")
    kind = resolve_kind(kind, n)
    params: dict[str, Any] = {"kind": kind}
    t0 = time.perf_counter()
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        nl = int(nlist) if nlist else default_nlist(n)
        if nl > n:
            raise UserError(f"IVF needs at least nlist={nl} vectors to train, got {n}")
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nl, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        n_train = min(n, train_per_list * nl)
        rng = np.random.default_rng(seed)
        sample = x if n_train == n else x[np.sort(rng.choice(n, n_train, replace=False))]
        index.train(sample)
        index.nprobe = default_nprobe(nl)
        params.update(nlist=nl, n_train=int(n_train), nprobe=int(index.nprobe))
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = DEFAULT_EF_SEARCH
        params.update(M=m, efConstruction=ef_construction, efSearch=DEFAULT_EF_SEARCH)
    else:  # pragma: no cover - resolve_kind validated it
        raise AssertionError(kind)
    index.add(x)
    params["build_s"] = round(time.perf_counter() - t0, 3)
    return index, params


def set_search_params(index: Any, *, nprobe: int | None = None, ef_search: int | None = None) -> None:
    """Set IVF nprobe / HNSW efSearch on `index` (ignored for kinds that do not have them)."""
    faiss = _faiss()
    if nprobe is not None:
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:
            ivf.nprobe = int(nprobe)
    if ef_search is not None and hasattr(index, "hnsw"):
        index.hnsw.efSearch = int(ef_search)
