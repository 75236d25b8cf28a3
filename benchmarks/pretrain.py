"""Benchmark contrastive pretraining with the `tiny` preset.

Prints and writes (``benchmarks/results/pretrain.json``):

- training throughput (images/s) of full optimizer steps (forward, CLIP loss, backward, grad
  clipping, AdamW, schedule) of the `tiny` model at batch 64 in fp32 and in bf16, each measured
  in a fresh subprocess so its peak resident memory (``ru_maxrss``) is its own
  (targets on 2 cores: >= 45 images/s fp32, >= 55 bf16, peak RSS <= 3 GB);
- the data loader's throughput alone (decode, resize, augment, tokenise, collate with the
  preset's workers and augmentation strength) and its ratio to the fp32 step rate (must be >= 3,
  so loading never starves training);
- model FLOP utilisation: FLOPs of one training step counted with
  ``torch.utils.flop_counter.FlopCounterMode`` times steps/s, over the machine's measured peak
  (a large fp32 matmul timed in the same run; a bf16 matmul peak is reported too).

Data: a simulated dataset (``sonofm simulate``, 128 px); pass ``--data DIR`` to use another.

Usage::

    python benchmarks/pretrain.py                 # full run (~2-3 min on 2 cores)
    python benchmarks/pretrain.py --seconds 3     # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "pretrain.json"
BATCH = 64
TARGETS = {"fp32_images_per_s": 45.0, "bf16_images_per_s": 55.0, "peak_rss_gb": 3.0, "loader_ratio": 3.0}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


def matmul_peak_gflops(dtype: torch.dtype, seconds: float, n: int = 2048) -> float:
    """Sustained GFLOP/s of an n x n x n matmul (2 n^3 FLOPs each)."""
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - t0) / 1e9


def make_dataset(out: Path, n: int) -> Path:
    from sonofm.sim.generator import simulate_dataset

    simulate_dataset(out, n, size=128, seed=0, progress=False)
    return out


def _config(data: Path, precision: str):
    from sonofm.config import PretrainConfig, resolve_config

    return resolve_config(
        PretrainConfig,
        preset="tiny",
        values={"data": {"path": str(data)}},
        overrides=[f"train.precision={precision}", f"train.batch_size={BATCH}", "train.progress=false"],
    )


def measure_step(data: Path, precision: str, seconds: float) -> dict:
    """Run in a subprocess: images/s of training steps on cached batches, FLOPs, peak RSS."""
    from torch.utils.flop_counter import FlopCounterMode

    from sonofm.data.loader import build_loader
    from sonofm.losses import build_contrastive_loss
    from sonofm.models import build_model
    from sonofm.train import ContrastiveStep, Trainer

    cfg = _config(data, precision)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    loader = build_loader(
        data,
        "train",
        BATCH,
        image_size=model.config.image.image_size,
        tokenizer=model.get_tokenizer(),
        augment=cfg.data.augment,
        drop_last=True,
    )
    batches = [b for _, b in zip(range(2), loader, strict=False)]
    if not batches:
        raise SystemExit(f"{data}: fewer than {BATCH} training images")
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, ContrastiveStep(build_contrastive_loss("clip")), cfg.train, tmp, loader)
        trainer.train_step([batches[0]])  # warm-up (allocations, first-call overheads)
        with FlopCounterMode(display=False) as counter:
            trainer.train_step([batches[-1]])
        flops = counter.get_total_flops()
        steps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds or steps < 2:
            trainer.train_step([batches[steps % len(batches)]])
            steps += 1
        dt = time.perf_counter() - t0
    return {
        "precision": precision,
        "images_per_s": steps * BATCH / dt,
        "step_s": dt / steps,
        "steps_timed": steps,
        "flops_per_step": flops,
        "achieved_gflops": flops * steps / dt / 1e9,
        "peak_rss_gb": peak_rss_gb(),
        "threads": torch.get_num_threads(),
    }


def measure_loader(data: Path, seconds: float) -> dict:
    """Images/s of the preset's loader alone (the training process does nothing else)."""
    from sonofm.data.loader import build_loader
    from sonofm.models.factory import resolve_config as resolve_model
    from sonofm.models.text_towers import TextTokenizer, load_tokenizer

    cfg = _config(data, "fp32")
    mcfg = resolve_model(cfg.model)
    tokenizer = TextTokenizer(load_tokenizer(mcfg.text.tokenizer), mcfg.text.max_length)
    loader = build_loader(
        data,
        "train",
        BATCH,
        image_size=mcfg.image.image_size,
        tokenizer=tokenizer,
        augment=cfg.data.augment,
        workers=cfg.train.workers,
        drop_last=True,
    )
    images, t0, epochs = 0, None, 0
    while True:
        for batch in loader:
            if t0 is None:  # start the clock after the workers are up
                t0 = time.perf_counter()
                continue
            images += len(batch["image"])
            if time.perf_counter() - t0 >= seconds:
                dt = time.perf_counter() - t0
                return {
                    "images_per_s": images / dt,
                    "workers": cfg.train.workers,
                    "augment": cfg.data.augment,
                }
        epochs += 1
        loader.dataset.set_epoch(epochs)


def _child(args: argparse.Namespace) -> None:
    if args.child == "loader":
        result = measure_loader(Path(args.data), args.seconds)
    else:
        result = measure_step(Path(args.data), args.child, args.seconds)
    print("RESULT " + json.dumps(result), flush=True)


def _run_child(kind: str, data: Path, seconds: float) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--data", str(data), "--seconds", str(seconds)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} measurement failed:\n{proc.stderr[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="timing window per measurement")
    parser.add_argument("--data", default=None, help="dataset dir (default: simulate 320 images at 128 px)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return

    with tempfile.TemporaryDirectory() as tmp:
        if args.data:
            data = Path(args.data)
        else:
            _log("simulating 320 images at 128 px ...")
            data = make_dataset(Path(tmp) / "sim", 320)
        _log("measuring matmul peaks ...")
        peak32 = matmul_peak_gflops(torch.float32, min(args.seconds, 5.0))
        peak16 = matmul_peak_gflops(torch.bfloat16, min(args.seconds, 5.0))
        runs = {}
        for precision in ("fp32", "bf16"):
            _log(f"timing training steps ({precision}) ...")
            runs[precision] = _run_child(precision, data, args.seconds)
        _log("timing the data loader alone ...")
        loader = _run_child("loader", data, args.seconds)

    for r in runs.values():
        r["mfu_vs_fp32_matmul_peak"] = r["achieved_gflops"] / peak32
    ratio = loader["images_per_s"] / runs["fp32"]["images_per_s"]
    result = {
        "benchmark": "pretrain",
        "preset": "tiny",
        "batch_size": BATCH,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "matmul_peak_gflops": {"fp32": peak32, "bf16": peak16},
        "train": runs,
        "loader": {**loader, "ratio_to_fp32_step": ratio},
        "targets": TARGETS,
        "meets_targets": {
            "fp32_images_per_s": runs["fp32"]["images_per_s"] >= TARGETS["fp32_images_per_s"],
            "bf16_images_per_s": runs["bf16"]["images_per_s"] >= TARGETS["bf16_images_per_s"],
            "peak_rss_gb": max(r["peak_rss_gb"] for r in runs.values()) <= TARGETS["peak_rss_gb"],
            "loader_ratio": ratio >= TARGETS["loader_ratio"],
        },
        "seconds_per_measurement": args.seconds,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = RESULTS.with_suffix(".json.tmp")
    tmp_path.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp_path, RESULTS)

    print(f"matmul peak: fp32 {peak32:.1f} GFLOP/s, bf16 {peak16:.1f} GFLOP/s")
    for p, r in runs.items():
        print(
            f"train {p}: {r['images_per_s']:.1f} images/s ({r['step_s'] * 1000:.0f} ms/step, batch {BATCH}), "
            f"peak RSS {r['peak_rss_gb']:.2f} GB, {r['flops_per_step'] / 1e9:.1f} GFLOP/step, "
            f"MFU {100 * r['mfu_vs_fp32_matmul_peak']:.1f}% of fp32 matmul peak"
        )
    print(f"loader alone: {loader['images_per_s']:.1f} images/s ({ratio:.1f}x the fp32 step; target >= 3x)")
    print(f"targets met: {result['meets_targets']}")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
