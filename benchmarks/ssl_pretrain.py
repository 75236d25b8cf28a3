"""Benchmark self-supervised pretraining (`sonofm ssl`) with the `tiny` SSL preset.

Prints and writes (``benchmarks/results/ssl.json``) the training throughput (images/s) of full
optimizer steps - masked forward pass of the tiny ViT (128 px, patch 16, width 192, 4 blocks),
SimMIM pixel decoder, L1 loss on masked cells, region/organ/view heads, backward, gradient
clipping, AdamW and the LR schedule through the shared Trainer - at batch 64 in fp32 and in
bf16. Each precision runs in a fresh subprocess so its peak resident memory is its own; the
FLOPs of one step (``torch.utils.flop_counter``) and the 1-minute load average of the machine at
the time are recorded too (the CPU is shared: compare numbers taken at similar load).

(Named ``ssl_pretrain.py``, not ``ssl.py``: a script directory comes first on ``sys.path``, so a
``benchmarks/ssl.py`` would shadow the standard library's ``ssl`` for every benchmark here.)

Data: a simulated dataset (breast, thyroid, liver, heart at 128 px); ``--data DIR`` for another.

Usage::

    python benchmarks/ssl_pretrain.py                 # ~1.5 min on 2 cores
    python benchmarks/ssl_pretrain.py --seconds 3     # smoke run
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
RESULTS = ROOT / "benchmarks" / "results" / "ssl.json"
BATCH = 64


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _config(data: Path, precision: str):
    from sonofm.config import resolve_config
    from sonofm.ssl.job import SSLConfig

    return resolve_config(
        SSLConfig,
        preset="tiny",
        kind="ssl",
        overrides=[
            f"data.path={data}",
            f"train.precision={precision}",
            f"train.batch_size={BATCH}",
            "train.progress=false",
            "train.workers=0",
        ],
    )


def measure_step(data: Path, precision: str, seconds: float) -> dict:
    """Images/s of training steps on two cached batches (the loader is not timed), FLOPs, RSS."""
    from torch.utils.flop_counter import FlopCounterMode

    from sonofm.models.ssl import SSLModel
    from sonofm.ssl.job import SSLCollate, SSLStep, _dataset, build_model_config
    from sonofm.train import Trainer

    cfg = _config(data, precision)
    torch.manual_seed(0)
    model = SSLModel(build_model_config(cfg))
    ds = _dataset(cfg, "train", model.visual.image_size, cfg.data.augment)
    mc = model.config
    collate = SSLCollate(mc.regions, mc.organs, mc.views)
    if len(ds) < 2 * BATCH:
        raise SystemExit(f"{data}: fewer than {2 * BATCH} training images")
    batches = [collate([ds[i] for i in range(k * BATCH, (k + 1) * BATCH)]) for k in range(2)]
    train_cfg = cfg.train.model_copy(update={"accum_feature_cache": False})
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(
            model, SSLStep(model, cfg.weights.model_dump()), train_cfg, tmp, ds, collate_fn=collate
        )
        trainer.train_step([batches[0]])  # warm-up
        with FlopCounterMode(display=False) as counter:
            trainer.train_step([batches[1]])
        flops = counter.get_total_flops()
        steps, t0, c0 = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - t0 < seconds or steps < 2:
            trainer.train_step([batches[steps % 2]])
            steps += 1
        dt = time.perf_counter() - t0
        cpu = time.process_time() - c0
    return {
        "precision": precision,
        "images_per_s": steps * BATCH / dt,
        "step_s": dt / steps,
        # CPU seconds this process got: on a shared machine, wall-clock img/s falls with the load
        # while img per CPU-second stays close to what a quiet machine gives (per core).
        "images_per_cpu_s": steps * BATCH / cpu,
        "steps_timed": steps,
        "flops_per_step": flops,
        "achieved_gflops": flops * steps / dt / 1e9,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        "threads": torch.get_num_threads(),
        "load_avg_1min": os.getloadavg()[0],
    }


def _run_child(precision: str, data: Path, seconds: float) -> dict:
    cmd = [sys.executable, __file__, "--child", precision, "--data", str(data), "--seconds", str(seconds)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{precision} measurement failed:\n{proc.stderr[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="timing window per precision")
    parser.add_argument("--data", default=None, help="dataset dir (default: simulate 200 images at 128 px)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(measure_step(Path(args.data), args.child, args.seconds)), flush=True)
        return

    with tempfile.TemporaryDirectory() as tmp:
        if args.data:
            data = Path(args.data)
        else:
            from sonofm.sim.generator import simulate_dataset

            _log("simulating 200 images at 128 px ...")
            data = simulate_dataset(
                Path(tmp) / "data",
                200,
                regions=["breast", "thyroid", "liver", "heart"],
                size=128,
                seed=0,
                progress=False,
            )
        train = {}
        for precision in ("fp32", "bf16"):
            _log(f"timing {precision} training steps for {args.seconds:g} s ...")
            train[precision] = _run_child(precision, data, args.seconds)
    cfg = _config(Path("."), "fp32")
    result = {
        "benchmark": "ssl",
        "preset": "tiny",
        "batch_size": BATCH,
        "settings": {
            "model": cfg.model,
            "mask_ratio": cfg.mask_ratio,
            "mask_patch": cfg.mask_patch,
            "decoder": cfg.decoder,
            "cls_input": cfg.cls_input,
        },
        "command": " ".join(["python benchmarks/ssl_pretrain.py", *sys.argv[1:]]),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
        },
        "train": train,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp_file = RESULTS.with_suffix(".json.tmp")
    tmp_file.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp_file, RESULTS)
    for precision, r in train.items():
        print(
            f"ssl tiny {precision}: {r['images_per_s']:.1f} img/s wall, "
            f"{r['images_per_cpu_s']:.1f} img per CPU-s "
            f"(batch {BATCH}, {r['step_s']:.2f} s/step, "
            f"{r['flops_per_step'] / 1e9:.0f} GFLOP/step, peak RSS {r['peak_rss_gb']:.2f} GB, "
            f"load avg {r['load_avg_1min']:.1f})"
        )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
