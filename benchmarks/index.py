"""Benchmark case-index search: latency, batched throughput and recall@10 per FAISS index kind.

Synthetic clustered unit vectors (float32, default 1M x 256): `--clusters` Gaussian clusters in a
`--latent-dim` space projected to D dims plus a little isotropic noise, so neighbourhoods are
structured like real embeddings (low intrinsic dimension), not uniform noise. Indexed with the
library's own `sonofm.serve.index.build_faiss` (the code path `sonofm index build` uses):

- flat (exact `IndexFlatIP`),
- IVF-Flat at nprobe 8, 32 and 128 (nlist = 4 sqrt(n) by default, `--nlist` to override; the
  build assigns every vector to a list, n x nlist x D flops, so nlist bounds build time),
- HNSW (M=32, efConstruction 64) at efSearch 64 and 128, on the first `--hnsw-n` vectors (HNSW
  inserts one vector at a time, ~1.5-3 ms each on 2 busy cores; `--hnsw-n 0` means all n).

Per configuration: build time, single-query latency p50/p95 (one `search` call per query, k=10,
`--latency-threads` OpenMP threads, 1 by default as in a server answering concurrent requests),
batched throughput (all queries in one call, all threads) and recall@10 against exact search on
the same vectors. Queries are fresh draws from the same mixture (not database rows). Results go
to ``benchmarks/results/index.json``.

Usage::

    python benchmarks/index.py                                  # 1M x 256, nlist 4000, HNSW on 1M (long)
    python benchmarks/index.py --nlist 1024 --train-per-list 39 --hnsw-n 50000   # ~6 min, 2 busy cores
    python benchmarks/index.py --n 100000 --queries 200          # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "index.json"


def clustered(
    n: int,
    centers: np.ndarray,
    proj: np.ndarray,
    sigma: float,
    ambient: float,
    seed: int,
    chunk: int = 100_000,
) -> np.ndarray:
    """n unit vectors: (cluster center + noise) in a low-dim latent space, projected to D, + ambient noise.

    Real embeddings have a low intrinsic dimension; isotropic noise in all D dims instead makes
    every point nearly equidistant (the curse of dimensionality), which no ANN index handles and
    no trained encoder produces. Generated in chunks, float32 throughout.
    """
    rng = np.random.default_rng(seed)
    latent, d = proj.shape
    out = np.empty((n, d), np.float32)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        z = centers[rng.integers(0, len(centers), b - a)]
        z += sigma * rng.standard_normal((b - a, latent), dtype=np.float32)
        x = z @ proj
        x += ambient * rng.standard_normal((b - a, d), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[a:b] = x
    return out


def measure(index, queries: np.ndarray, k: int, n_latency: int, latency_threads: int) -> dict:
    """Single-query latency percentiles (ms, `latency_threads` OpenMP threads) and batched QPS (all threads).

    One thread per query is how a server handles concurrent requests; on a busy machine OpenMP
    threads also wait on each other at every barrier, which inflates single-query latency.
    """
    import faiss

    index.search(queries[:1], k)  # warm-up (page in, lazy allocations)
    all_threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(latency_threads)
    lat = []
    for q in queries[:n_latency]:
        t = time.perf_counter()
        index.search(q[None], k)
        lat.append((time.perf_counter() - t) * 1e3)
    faiss.omp_set_num_threads(all_threads)
    t = time.perf_counter()
    _, ids = index.search(queries, k)
    batch_s = time.perf_counter() - t
    return {
        "p50_ms": round(float(np.percentile(lat, 50)), 3),
        "p95_ms": round(float(np.percentile(lat, 95)), 3),
        "n_latency_queries": len(lat),
        "batched_qps": round(len(queries) / batch_s, 1),
        "batch_size": len(queries),
        "ids": ids,
    }


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    k = exact.shape[1]
    return float(np.mean([len(set(a) & set(e)) / k for a, e in zip(approx, exact, strict=True)]))


def main() -> None:
    import faiss

    from sonofm.serve.index import build_faiss, default_nlist, set_search_params

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--clusters", type=int, default=10000)
    ap.add_argument("--latent-dim", type=int, default=32, help="intrinsic dimension of the data")
    ap.add_argument("--sigma", type=float, default=0.15, help="latent noise std (centers: 1/sqrt(latent))")
    ap.add_argument("--ambient", type=float, default=0.01, help="isotropic noise std in all D dims")
    ap.add_argument("--queries", type=int, default=500, help="queries for batched QPS and recall")
    ap.add_argument("--latency-queries", type=int, default=100, help="single queries timed (flat: 30)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--nlist", type=int, default=None, help="IVF lists (default 4 sqrt(n))")
    ap.add_argument("--train-per-list", type=int, default=64, help="IVF k-means sample = this x nlist")
    ap.add_argument("--latency-threads", type=int, default=1, help="OpenMP threads for single queries")
    ap.add_argument("--hnsw-n", type=int, default=0, help="vectors in the HNSW index (0 = all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    t_all = time.perf_counter()
    load0 = os.getloadavg()
    rng = np.random.default_rng(args.seed)
    lat = args.latent_dim
    centers = rng.standard_normal((args.clusters, lat), dtype=np.float32) / np.sqrt(lat)
    proj = np.linalg.qr(rng.standard_normal((args.dim, lat)))[0].T.astype(np.float32)  # orthonormal rows
    t = time.perf_counter()
    db = clustered(args.n, centers, proj, args.sigma, args.ambient, args.seed + 1)
    queries = clustered(args.queries, centers, proj, args.sigma, args.ambient, args.seed + 2)
    gen_s = time.perf_counter() - t
    print(f"data: {args.n} x {args.dim} in {gen_s:.1f} s", flush=True)
    rows: list[dict] = []

    def record(name: str, n: int, params: dict, build_s: float, m: dict, exact: np.ndarray | None) -> None:
        ids = m.pop("ids")
        row = {"index": name, "n": n, **params, "build_s": round(build_s, 2), **m}
        row["recall_at_10"] = 1.0 if exact is None else round(recall_at_k(ids, exact), 4)
        rows.append(row)
        print(json.dumps(row), flush=True)

    # exact (also the ground truth for recall)
    index, p = build_faiss(db, "flat")
    m = measure(index, queries, args.k, min(args.latency_queries, 30), args.latency_threads)
    exact = m["ids"].copy()
    record("flat", args.n, {}, p["build_s"], m, None)
    del index

    nlist = args.nlist or default_nlist(args.n)
    index, p = build_faiss(db, "ivf", nlist=nlist, train_per_list=args.train_per_list)
    for nprobe in (8, 32, 128):
        set_search_params(index, nprobe=nprobe)
        m = measure(index, queries, args.k, args.latency_queries, args.latency_threads)
        record(
            "ivf", args.n, {"nlist": nlist, "n_train": p["n_train"], "nprobe": nprobe}, p["build_s"], m, exact
        )
    del index

    hn = args.hnsw_n or args.n
    sub = db[:hn]
    exact_sub = exact if hn == args.n else build_faiss(sub, "flat")[0].search(queries, args.k)[1]
    index, p = build_faiss(sub, "hnsw")
    for ef in (64, 128):
        set_search_params(index, ef_search=ef)
        m = measure(index, queries, args.k, args.latency_queries, args.latency_threads)
        record(
            "hnsw",
            hn,
            {"M": p["M"], "efConstruction": p["efConstruction"], "efSearch": ef},
            p["build_s"],
            m,
            exact_sub,
        )
    del index

    result = {
        "benchmark": "case index search (benchmarks/index.py)",
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "k": args.k,
        "data_gen_s": round(gen_s, 1),
        "total_s": round(time.perf_counter() - t_all, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "faiss_threads": faiss.omp_get_max_threads(),
            "loadavg_start": [round(x, 2) for x in load0],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            "platform": platform.platform(),
            "faiss": faiss.__version__,
        },
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, args.out)
    print(f"wrote {args.out} in {result['total_s']} s")


if __name__ == "__main__":
    main()
