"""Benchmark the evaluation suite's two hot paths.

Prints and writes (``benchmarks/results/eval.json``):

- image embedding throughput inside the suite (`sonofm.eval.embed.embed_images`: PNG decode,
  resize, DataLoader batching, `encode_image` under inference_mode) versus the model's raw
  inference throughput on the same images already stacked in memory; the ratio should be ~1
  (no per-image Python overhead in the suite);
- retrieval over a Q x G gallery of random unit vectors (embedding dim of the model): the suite's
  exact chunked-matmul ranks (`sonofm.eval.metrics.retrieval_ranks`, full rank of the first
  positive, so mean/median rank are exact), and FAISS `IndexFlatIP` top-10 search for R@1/5/10.
  The target is < 30 s for 100k x 100k on 2 cores.

Usage::

    python benchmarks/eval.py                                   # full: 100k x 100k gallery
    python benchmarks/eval.py --gallery 20000 --images 128      # smoke run on a shared machine
    python benchmarks/eval.py --model runs/clip/model --data data/sim
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "eval.json"


def _model(spec: str | None):
    from sonofm.models import build_model, load_model

    if spec and Path(spec).is_dir():
        return load_model(spec), spec
    torch.manual_seed(0)
    return build_model(spec or "tiny").eval(), f"preset:{spec or 'tiny'} (untrained)"


def bench_embedding(model, data: Path, batch_size: int, repeats: int) -> dict:
    from sonofm.data.dataset import UltrasoundDataset
    from sonofm.data.manifest import read_manifest
    from sonofm.eval.embed import embed_images

    size = int(model.config.image.image_size)
    df = read_manifest(data)  # the suite reads the manifest once, then embeds split DataFrames
    ds = UltrasoundDataset(df, None, image_size=size, root=data)
    x = torch.stack([ds[i]["image"] for i in range(len(ds))])
    n = len(x)
    raw, suite = [], []
    with torch.inference_mode():
        model.encode_image(x[:batch_size])  # warm-up
    # interleave the two measurements so load changes on a shared machine hit both alike
    for _ in range(repeats):
        t0 = time.perf_counter()
        with torch.inference_mode():
            for a in range(0, n, batch_size):
                model.encode_image(x[a : a + batch_size])
        raw.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        embed_images(model, df, split=None, root=data, batch_size=batch_size)
        suite.append(time.perf_counter() - t0)
    raw_ips, suite_ips = n / min(raw), n / min(suite)
    return {
        "n_images": n,
        "image_size": size,
        "batch_size": batch_size,
        "raw_model_images_per_s": raw_ips,
        "suite_images_per_s": suite_ips,
        "suite_over_raw": suite_ips / raw_ips,
        "note": "best of repeats; suite includes PNG decode + resize + batching",
    }


def bench_retrieval(n_query: int, n_gallery: int, dim: int, chunk: int) -> dict:
    import faiss

    from sonofm.eval.metrics import recall_at_k, retrieval_ranks

    rng = np.random.default_rng(0)
    g = rng.standard_normal((n_gallery, dim), dtype=np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    # each query is a noisy copy of its positive gallery item (key = index)
    idx = np.arange(n_query) % n_gallery
    q = g[idx] + 3.0 * rng.standard_normal((n_query, dim), dtype=np.float32) / np.sqrt(dim)  # cos ~0.3
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    keys_q, keys_g = idx, np.arange(n_gallery)

    t0 = time.perf_counter()
    ranks = retrieval_ranks(q, g, (keys_q, keys_g), chunk=chunk)
    t_exact = time.perf_counter() - t0

    t0 = time.perf_counter()
    index = faiss.IndexFlatIP(dim)
    index.add(g)
    _, top = index.search(q, 10)
    t_faiss = time.perf_counter() - t0
    faiss_r = {k: float(np.mean((top[:, :k] == idx[:, None]).any(1))) for k in (1, 5, 10)}
    exact_r = {k: recall_at_k(ranks, k) for k in (1, 5, 10)}
    return {
        "queries": n_query,
        "gallery": n_gallery,
        "dim": dim,
        "exact_ranks_s": t_exact,
        "faiss_flatip_top10_s": t_faiss,
        "recall_exact": exact_r,
        "recall_faiss": faiss_r,
        "agree": all(abs(exact_r[k] - faiss_r[k]) < 1e-3 for k in (1, 5, 10)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model dir or preset (default: untrained tiny)")
    ap.add_argument("--data", default=None, help="dataset dir (default: simulate --images images at 128 px)")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--queries", type=int, default=None, help="default: = gallery")
    ap.add_argument("--gallery", type=int, default=100_000)
    ap.add_argument("--chunk", type=int, default=4096)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()

    model, model_desc = _model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else Path(tmp) / "data"
        if not args.data:
            from sonofm.sim.generator import simulate_dataset

            simulate_dataset(data, args.images, size=128, seed=0, progress=False)
        emb = bench_embedding(model, data, args.batch_size, args.repeats)
    print(
        f"embedding: raw model {emb['raw_model_images_per_s']:.1f} img/s, suite "
        f"{emb['suite_images_per_s']:.1f} img/s (ratio {emb['suite_over_raw']:.2f}) "
        f"on {emb['n_images']} images"
    )
    ret = bench_retrieval(args.queries or args.gallery, args.gallery, int(model.config.embed_dim), args.chunk)
    print(
        f"retrieval {ret['queries']} x {ret['gallery']} (d={ret['dim']}): "
        f"exact ranks {ret['exact_ranks_s']:.1f} s, "
        f"FAISS IndexFlatIP top-10 {ret['faiss_flatip_top10_s']:.1f} s; R@1/5/10 agree: {ret['agree']}"
    )
    doc = {
        "benchmark": "eval",
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_avg_1min": os.getloadavg()[0],
        },
        "model": model_desc,
        "embedding": emb,
        "retrieval": ret,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(f".{out.name}.tmp")
    tmp_out.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp_out, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
