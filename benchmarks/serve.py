"""Load test of `sonofm serve` on loopback: latency percentiles and throughput vs concurrency.

A real server (`sonofm serve` in a subprocess, uvicorn, one process) runs a model (default: the
`tiny` preset, untrained: speed does not depend on the weights) with a case index of `--cases`
vectors. The index holds the embeddings of a small simulated set (`--sim` images), repeated with
small Gaussian jitter up to `--cases` rows (simulating thousands of images would dominate the
run; search cost depends on the vector count, not on where the vectors came from). Each level
runs `--requests` POST /api/analyze calls (PNG uploads, k=5, thumbnails inline) from `--clients`
concurrent httpx.AsyncClient workers after a warm-up, and records p50/p95/p99 latency,
throughput and the server's mean micro-batch size for that level.

Usage::

    python benchmarks/serve.py                       # 1, 8, 32 clients, 96 requests each, 3000 cases
    python benchmarks/serve.py --clients 1,4 --requests 32 --cases 1000   # quick
    python benchmarks/serve.py --onnx                # encoders on onnxruntime

Writes benchmarks/results/serve.json (atomically).
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python benchmarks/serve.py` puts benchmarks/ first on sys.path, where a benchmark named like a
# standard-library module (an `ssl.py` once did) shadows it for asyncio/httpx: drop that entry.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "serve.json"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_assets(work: Path, preset: str, n_sim: int, n_cases: int, seed: int = 0) -> tuple[Path, Path, Path]:
    """(model dir, index dir, query image dir)."""
    import pandas as pd
    import torch

    from sonofm.models import build_model, save_model
    from sonofm.serve import index as ix
    from sonofm.sim.generator import simulate_dataset

    data = work / "data"
    simulate_dataset(data, n_sim, size=128, seed=seed, progress=False)
    torch.manual_seed(seed)
    model_dir = Path(save_model(build_model(preset).eval(), work / "model"))
    small = Path(ix.build_index(model_dir, data, work / "index-small"))
    base = ix.CaseIndex.load(small)
    vecs = np.stack([base.vector(str(i)) for i in base.meta["id"]])
    rng = np.random.default_rng(seed)
    reps = int(np.ceil(n_cases / len(vecs)))
    big = np.concatenate(
        [vecs + (0 if r == 0 else 0.05) * rng.standard_normal(vecs.shape) for r in range(reps)]
    )
    big = ix.normalize_rows(big[:n_cases].astype(np.float32))
    index, params = ix.build_faiss(big, "auto")
    meta = pd.concat([base.meta] * reps, ignore_index=True).iloc[:n_cases].copy()
    meta["id"] = [f"{i}-r{j // len(vecs)}" for j, i in enumerate(meta["id"])]
    meta["thumb"] = [f"../index-small/{t}" for t in meta["thumb"]]
    meta["image"] = [f"../index-small/{p}" for p in meta["image"]]
    out = work / "index"
    out.mkdir()
    meta.to_parquet(out / ix.META_FILE, index=False)
    ix._faiss().write_index(index, str(out / ix.INDEX_FILE))
    info = {**base.info, **{k: v for k, v in params.items() if k != "kind"}}
    info.update(
        kind=params["kind"],
        count=len(meta),
        dim=int(big.shape[1]),
        note=f"{len(vecs)} simulated embeddings repeated with jitter to {n_cases} rows",
    )
    (out / ix.INFO_FILE).write_text(json.dumps(info, default=str))
    return model_dir, out, data / "images"


def start_server(
    model: Path, index: Path, port: int, args: argparse.Namespace, log: Path
) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-c",
        "from sonofm.cli import main; main()",
        "serve",
        "--model",
        str(model),
        "--index",
        str(index),
        "--port",
        str(port),
        "--batch-max",
        str(args.batch_max),
        "--batch-wait-ms",
        str(args.batch_wait_ms),
    ]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.onnx:
        cmd.append("--onnx")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(log, "wb"), cwd=ROOT)


async def wait_ready(base: str, proc: subprocess.Popen, timeout: float = 240.0) -> dict:
    import httpx

    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=5.0) as c:
        while time.perf_counter() - t0 < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with code {proc.returncode}")
            try:
                r = await c.get(base + "/ready")
                if r.status_code == 200:
                    return {**r.json(), "startup_s": time.perf_counter() - t0}
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.25)
    raise TimeoutError("server not ready")


async def run_level(base: str, images: list[bytes], clients: int, requests: int, k: int) -> dict:
    import httpx

    lat: list[float] = []
    errors: dict[str, int] = {}
    counter = iter(range(requests))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120.0, limits=limits) as c:
        before = (await c.get(base + "/ready")).json()["batcher"]

        async def worker() -> None:
            for i in counter:
                files = {"file": (f"q{i}.png", images[i % len(images)], "image/png")}
                t0 = time.perf_counter()
                try:
                    r = await c.post(base + "/api/analyze", files=files, data={"k": str(k)})
                    ok = r.status_code == 200
                    key = None if ok else f"http {r.status_code}"
                except httpx.HTTPError as e:
                    ok, key = False, type(e).__name__
                if ok:
                    lat.append(time.perf_counter() - t0)
                else:
                    errors[key] = errors.get(key, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
        after = (await c.get(base + "/ready")).json()["batcher"]
    ms = np.array(lat) * 1000.0
    batches = after["batches"] - before["batches"]
    items = after["items"] - before["items"]
    return {
        "clients": clients,
        "requests": requests,
        "ok": len(lat),
        "errors": errors,
        "wall_s": round(wall, 3),
        "throughput_rps": round(len(lat) / wall, 2),
        "latency_ms": {
            "p50": round(float(np.percentile(ms, 50)), 1),
            "p95": round(float(np.percentile(ms, 95)), 1),
            "p99": round(float(np.percentile(ms, 99)), 1),
            "mean": round(float(ms.mean()), 1),
            "max": round(float(ms.max()), 1),
        },
        "model_forwards": batches,
        "mean_batch_size": round(items / batches, 2) if batches else 0.0,
    }


async def bench(args: argparse.Namespace, model: Path, index: Path, images: list[bytes], work: Path) -> dict:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(model, index, port, args, work / "server.log")
    try:
        ready = await wait_ready(base, proc)
        await run_level(base, images, 4, 8, args.k)  # warm-up (first forwards, allocator, caches)
        levels = []
        for c in args.clients:
            res = await run_level(base, images, c, args.requests, args.k)
            lat = res["latency_ms"]
            print(
                f"clients={c:3d}  p50={lat['p50']:8.1f} ms  p95={lat['p95']:8.1f} ms  "
                f"{res['throughput_rps']:7.1f} req/s  mean batch {res['mean_batch_size']:.1f}  "
                f"errors {res['errors']}",
                flush=True,
            )
            levels.append(res)
        return {"ready": ready, "levels": levels}
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", default="1,8,32", help="comma-separated concurrency levels")
    ap.add_argument("--requests", type=int, default=96, help="requests per level")
    ap.add_argument("--cases", type=int, default=3000, help="vectors in the case index")
    ap.add_argument("--sim", type=int, default=48, help="simulated images (queries + index seeds)")
    ap.add_argument("--preset", default="tiny", help="model preset (untrained)")
    ap.add_argument("--k", type=int, default=5, help="similar cases per request")
    ap.add_argument("--batch-max", type=int, default=16)
    ap.add_argument("--batch-wait-ms", type=float, default=5.0)
    ap.add_argument("--onnx", action="store_true", help="serve the encoders on onnxruntime")
    ap.add_argument("--threads", type=int, default=None, help="server torch threads (default: torch's)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    args.clients = [int(x) for x in args.clients.split(",") if x.strip()]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sonofm-bench-serve-") as tmp:
        work = Path(tmp)
        model, index, img_dir = build_assets(work, args.preset, args.sim, args.cases)
        images = [p.read_bytes() for p in sorted(img_dir.glob("*.png"))]
        setup_s = time.perf_counter() - t0
        out = asyncio.run(bench(args, model, index, images, work))
    import torch

    doc = {
        "benchmark": "serve",
        "command": "serve.py " + " ".join(sys.argv[1:]),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "client_torch_threads": torch.get_num_threads(),
            "load_avg_1min": os.getloadavg()[0],
            "note": "client and server share the machine (loopback); other jobs ran concurrently",
        },
        "server": {
            "model": f"preset:{args.preset} (untrained)",
            "backend": "onnxruntime" if args.onnx else "torch",
            "index_cases": args.cases,
            "index_kind": out["ready"]["models"]["index"]["kind"],
            "batch_max": args.batch_max,
            "batch_wait_ms": args.batch_wait_ms,
            "torch_threads": args.threads or "default",
            "startup_s": round(out["ready"]["startup_s"], 2),
            "text_prompts_cached": out["ready"]["text_prompts_cached"],
        },
        "request": {"k": args.k, "image": "simulated PNG 128x128", "thumbnails": "inline data URIs"},
        "levels": out["levels"],
        "setup_s": round(setup_s, 1),
        "total_s": round(time.perf_counter() - t0, 1),
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = path.with_name(f".{path.name}.tmp")
    tmp_out.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp_out, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
