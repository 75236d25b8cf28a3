"""Benchmark contrastive pretraining with the `tiny` preset: the step, the real job, and open_clip.

Three measurements, each written into ``benchmarks/results/pretrain.json`` with the command, the
date, the load average before/after and the thread count:

``ab`` -- sonofm vs open_clip, one training step each, alternating A/B in one process per precision
    (fp32, bf16) on the same cached batches and identical towers (``benchmarks/openclip_anchor.py``:
    open_clip 3.3's ViT + HF-text CLIP at the tiny preset's sizes), batch 64, full optimizer steps.
    Timed in CPU-seconds per step (``time.process_time``) and wall seconds; the ratio
    open_clip/sonofm of the median CPU-seconds is robust to other load on the machine when run
    single-threaded (the default ``--threads 1``). FLOPs per step are counted with
    ``FlopCounterMode``; MFU is FLOPs per CPU-second over the matmul peak *of the precision in use*
    (a 2048^3 fp32 or bf16 matmul timed the same way in the same process).

``job`` -- ``sonofm pretrain`` end to end on a simulated set (loader workers, validation every
    epoch, checkpoints, the final model dir), against the cached-batch step of the same model at the
    same thread count, measured just before and after the job. Reported: images/s from the first
    logged step to the process exit (and of the whole command), CPU-seconds per image of job vs
    step, and the ratio job/step (target >= 0.9).

``loader`` -- the data loader alone (decode, augment, tokenise, collate with the preset's workers).

Usage::

    python benchmarks/pretrain.py                          # all parts (~6 min on 2 loaded cores)
    python benchmarks/pretrain.py --part ab --rounds 8     # sonofm vs open_clip only
    python benchmarks/pretrain.py --part job --job-precisions bf16
    python benchmarks/pretrain.py --quick                  # smoke run (make bench)

The open_clip anchor is pip-installed on first use (``--no-deps``, into ``.sonofm-cache``); where
no package index is reachable the A/B part records why and the other parts still run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "pretrain.json"
BATCH = 64
TARGETS = {"ab_ratio": 1.25, "job_vs_step": 0.9}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


def matmul_peak_gflops(dtype: torch.dtype, seconds: float, n: int = 2048) -> float:
    """GFLOP per CPU-second of an n x n x n matmul (2 n^3 FLOPs each) at this process's threads."""
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    count, t0 = 0, time.process_time()
    while time.process_time() - t0 < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.process_time() - t0) / 1e9


def make_dataset(out: Path, n: int) -> Path:
    from sonofm.sim.generator import simulate_dataset

    simulate_dataset(out, n, size=128, seed=0, progress=False)
    return out


def _config(data: Path, precision: str, extra: tuple[str, ...] = ()):
    from sonofm.config import PretrainConfig, resolve_config

    return resolve_config(
        PretrainConfig,
        preset="tiny",
        values={"data": {"path": str(data)}},
        overrides=[
            f"train.precision={precision}",
            f"train.batch_size={BATCH}",
            "train.progress=false",
            *extra,
        ],
    )


def _setup(data: Path, precision: str, extra: tuple[str, ...] = ()):
    """(trainer, cached batches, model) for the tiny preset at ``precision``."""
    from sonofm.data.loader import build_loader
    from sonofm.losses import build_contrastive_loss
    from sonofm.models import build_model
    from sonofm.train import ContrastiveStep, Trainer

    cfg = _config(data, precision, extra)
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
    if len(batches) < 2:
        raise SystemExit(f"{data}: fewer than {2 * BATCH} training images")
    tmp = tempfile.mkdtemp(prefix="sonofm-bench-")
    trainer = Trainer(model, ContrastiveStep(build_contrastive_loss("clip")), cfg.train, tmp, loader)
    trainer._wrap_model()  # what fit() does first (DDP / torch.compile)
    return trainer, batches, model


def _flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _timed(fn) -> tuple[float, float]:
    c0, w0 = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - c0, time.perf_counter() - w0


def measure_ab(data: Path, precision: str, rounds: int, extra: tuple[str, ...]) -> dict:
    """Run in a subprocess: alternate sonofm and open_clip steps on the same batches."""
    sys.path.insert(0, str(Path(__file__).parent))
    from openclip_anchor import OPEN_CLIP_VERSION, AnchorStep, build_anchor

    trainer, batches, model = _setup(data, precision, extra)
    # the same model without the text prefix cache: the frozen text layers run every step, as in
    # open_clip, so the ratio without the cache says what the rest of the step is worth
    plain_trainer, _, _ = _setup(data, precision, (*extra, "model.text.cache=0"))
    try:
        anchor = AnchorStep(build_anchor(model), precision)
    except (ImportError, OSError, subprocess.CalledProcessError) as err:  # e.g. no package index
        return {"precision": precision, "error": f"open_clip anchor unavailable: {err}"}
    steps = {
        "sonofm": lambda b: trainer.train_step([b]),
        "sonofm_no_text_cache": lambda b: plain_trainer.train_step([b]),
        "open_clip": anchor,
    }
    for step in steps.values():  # warm-up: allocations, first-call overheads, lazy init
        for b in batches:
            step(b)
    flops = {name: _flops(lambda s=step: s(batches[0])) for name, step in steps.items()}
    times: dict[str, dict[str, list[float]]] = {n: {"cpu_s": [], "wall_s": []} for n in steps}
    for r in range(rounds):
        names = list(steps)[r % len(steps) :] + list(steps)[: r % len(steps)]
        order = names if r % 2 == 0 else list(reversed(names))  # rotated, reversed: no position bias
        for name in order:
            cpu, wall = _timed(lambda s=steps[name], b=batches[r % 2]: s(b))
            times[name]["cpu_s"].append(cpu)
            times[name]["wall_s"].append(wall)
    trainer.check_finite()
    peak = matmul_peak_gflops(torch.bfloat16 if precision == "bf16" else torch.float32, 3.0)
    out: dict = {"precision": precision, "rounds": rounds, "threads": torch.get_num_threads()}
    for name in steps:
        cpu = statistics.median(times[name]["cpu_s"])
        wall = statistics.median(times[name]["wall_s"])
        out[name] = {
            "cpu_s_per_step": cpu,
            "wall_s_per_step": wall,
            "images_per_cpu_s": BATCH / cpu,
            "images_per_s": BATCH / wall,
            "flops_per_step": flops[name],
            "gflops_per_cpu_s": flops[name] / cpu / 1e9,
            "mfu": flops[name] / cpu / 1e9 / peak,
            "cpu_s_all": times[name]["cpu_s"],
            "wall_s_all": times[name]["wall_s"],
        }
    out["ratio_cpu"] = out["open_clip"]["cpu_s_per_step"] / out["sonofm"]["cpu_s_per_step"]
    out["ratio_cpu_no_text_cache"] = (
        out["open_clip"]["cpu_s_per_step"] / out["sonofm_no_text_cache"]["cpu_s_per_step"]
    )
    out["text_cache"] = {"entries": model.config.text.cache, "frozen_layers": model.config.text.freeze_layers}
    out["ratio_wall"] = out["open_clip"]["wall_s_per_step"] / out["sonofm"]["wall_s_per_step"]
    # the same ratio from each adjacent pair (spread shows how much load moved the numbers)
    pairs = [a / s for a, s in zip(times["open_clip"]["cpu_s"], times["sonofm"]["cpu_s"], strict=True)]
    out["ratio_cpu_pairs"] = [round(p, 3) for p in pairs]
    out["peak_gflops_per_cpu_s"] = peak
    out["open_clip_version"] = OPEN_CLIP_VERSION
    out["attention"] = model.visual.backbone.config._attn_implementation
    out["optimizer_fused"] = bool(trainer.optimizer.defaults.get("fused"))
    out["peak_rss_gb"] = peak_rss_gb()
    return out


def measure_step(data: Path, precision: str, seconds: float, extra: tuple[str, ...]) -> dict:
    """Run in a subprocess: images/s of sonofm steps on cached batches (no loader, no validation)."""
    trainer, batches, _ = _setup(data, precision, extra)
    for b in batches:
        trainer.train_step([b])
    steps, c0, t0 = 0, time.process_time(), time.perf_counter()
    while time.perf_counter() - t0 < seconds or steps < 4:
        trainer.train_step([batches[steps % 2]])
        steps += 1
    trainer.check_finite()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "precision": precision,
        "images_per_s": steps * BATCH / wall,
        "cpu_s_per_image": cpu / (steps * BATCH),
        "steps": steps,
        "threads": torch.get_num_threads(),
        "peak_rss_gb": peak_rss_gb(),
    }


def measure_loader(data: Path, seconds: float) -> dict:
    """Images/s of the preset's loader alone (the training process does nothing else)."""
    from sonofm.data.loader import build_loader, loader_workers
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
        workers=loader_workers(cfg.train.workers, "cpu"),  # what the job starts on this machine
        drop_last=True,
        with_masks=False,  # as sonofm.pretrain.job builds it
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
                workers, augment = loader.num_workers, cfg.data.augment
                return {"images_per_s": images / dt, "workers": workers, "augment": augment}
        epochs += 1
        loader.dataset.set_epoch(epochs)


def run_job(data: Path, precision: str, epochs: int, extra: tuple[str, ...]) -> dict:
    """`sonofm pretrain` as a user runs it; wall and CPU seconds; time of the first logged step."""
    out = Path(tempfile.mkdtemp(prefix="sonofm-bench-job-")) / "run"
    cmd = [sys.executable, "-m", "sonofm.cli", "pretrain", "--data", str(data), "--out", str(out)]
    cmd += ["--preset", "tiny", "--precision", precision, "--epochs", str(epochs)]
    cmd += ["train.progress=false", "train.log_every=1", *extra]
    metrics = out / "metrics.jsonl"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first_step_at = None
    while proc.poll() is None:
        if first_step_at is None and metrics.is_file() and metrics.stat().st_size > 0:
            first_step_at = time.perf_counter()
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    log_text = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        raise SystemExit(f"sonofm pretrain failed ({proc.returncode}):\n{log_text[-3000:]}")
    rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    steps = max(r["step"] for r in rows if "loss" in r)
    images = steps * BATCH
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    loop_wall = wall - (first_step_at - t0 if first_step_at else 0.0)
    return {
        "command": shlex.join(["sonofm", *cmd[3:]]),
        "precision": precision,
        "epochs": epochs,
        "steps": steps,
        "images": images,
        "wall_s": wall,
        "cpu_s": cpu,
        "images_per_s_whole_command": images / wall,
        # the first step's own time is left out with the start-up; validation, checkpoints and
        # the model dir written after the last step are in
        "images_per_s_from_first_step": (steps - 1) * BATCH / loop_wall,
        "cpu_s_per_image": cpu / images,
        "validations": sum(1 for r in rows if any(k.startswith("val/") for k in r)),
    }


def _child(args: argparse.Namespace) -> None:
    extra = tuple(args.override or ())
    if args.child == "loader":
        result = measure_loader(Path(args.data), args.seconds)
    elif args.child.startswith("ab-"):
        result = measure_ab(Path(args.data), args.child[3:], args.rounds, extra)
    else:
        result = measure_step(Path(args.data), args.child[5:], args.seconds, extra)
    print("RESULT " + json.dumps(result), flush=True)


def _run_child(kind: str, args: argparse.Namespace, data: Path, threads: int | None) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--data", str(data), "--seconds", str(args.seconds)]
    cmd += ["--rounds", str(args.rounds)]
    for o in args.override or ():
        cmd += ["--override", o]
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} measurement failed:\n{proc.stderr[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def _write(result: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    if old.get("version") == 2:  # keep the parts this run did not measure
        result = {**old, **result, "parts": {**old.get("parts", {}), **result["parts"]}}
    tmp_path = RESULTS.with_suffix(".json.tmp")
    tmp_path.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp_path, RESULTS)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=["all", "ab", "job", "loader"], default="all")
    parser.add_argument("--rounds", type=int, default=6, help="A/B rounds (one step of each per round)")
    parser.add_argument("--threads", type=int, default=1, help="threads of the A/B processes")
    parser.add_argument("--seconds", type=float, default=15.0, help="timing window of step/loader runs")
    parser.add_argument("--ab-precisions", default="fp32,bf16")
    parser.add_argument("--job-precisions", default="bf16")
    parser.add_argument("--job-epochs", type=int, default=3)
    parser.add_argument("--job-images", type=int, default=960, help="simulated images for the job")
    parser.add_argument("--data", default=None, help="dataset dir (default: simulate --job-images at 128 px)")
    parser.add_argument("--override", action="append", help="sonofm key=value, e.g. train.compile=true")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 A/B round, a 1-epoch job")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.job_images, args.job_epochs = 1, min(args.seconds, 3.0), 320, 1
    if args.child:
        _child(args)
        return

    command = shlex.join(["python", "benchmarks/pretrain.py", *sys.argv[1:]])
    parts: dict = {}
    load_before = loadavg()
    with tempfile.TemporaryDirectory() as tmp:
        if args.data:
            data = Path(args.data)
        else:
            _log(f"simulating {args.job_images} images at 128 px ...")
            data = make_dataset(Path(tmp) / "sim", args.job_images)
        if args.part in ("all", "ab"):
            parts["ab"] = {}
            for p in args.ab_precisions.split(","):
                _log(f"A/B sonofm vs open_clip ({p}, {args.threads} thread(s), {args.rounds} rounds) ...")
                r = _run_child(f"ab-{p}", args, data, args.threads)
                r["load_after"] = loadavg()
                parts["ab"][p] = r
                if "error" in r:
                    _log(f"  {r['error']}")
                    continue
                _log(
                    f"  open_clip/sonofm CPU-s ratio {r['ratio_cpu']:.3f} (wall {r['ratio_wall']:.3f}; "
                    f"without the text cache {r['ratio_cpu_no_text_cache']:.3f})"
                )
        if args.part in ("all", "job"):
            parts["job"] = {}
            for p in args.job_precisions.split(","):
                _log(f"step vs job ({p}, default threads) ...")
                step_a = _run_child(f"step-{p}", args, data, None)
                job = run_job(data, p, args.job_epochs, tuple(args.override or ()))
                step_b = _run_child(f"step-{p}", args, data, None)
                step_ips = (step_a["images_per_s"] + step_b["images_per_s"]) / 2
                step_cpi = (step_a["cpu_s_per_image"] + step_b["cpu_s_per_image"]) / 2
                parts["job"][p] = {
                    "step": [step_a, step_b],
                    "job": job,
                    "step_images_per_s": step_ips,
                    "ratio_images_per_s": job["images_per_s_from_first_step"] / step_ips,
                    "ratio_images_per_s_whole_command": job["images_per_s_whole_command"] / step_ips,
                    "ratio_cpu_per_image": step_cpi / job["cpu_s_per_image"],
                    "load_after": loadavg(),
                }
                _log(f"  job/step images/s {parts['job'][p]['ratio_images_per_s']:.3f}")
        if args.part in ("all", "loader"):
            _log("timing the data loader alone ...")
            parts["loader"] = _run_child("loader", args, data, None)

    # each part carries the run that measured it: a later `--part job` keeps the A/B part of an
    # earlier run in the file, and its command and date must stay with it
    date = datetime.now(UTC).isoformat(timespec="seconds")
    run_info = {"command": command, "date": date, "load_before": load_before}
    for name, part in parts.items():
        for measured in [part] if name == "loader" else part.values():  # ab/job: one per precision
            measured["run"] = run_info
    result = {
        "benchmark": "pretrain",
        "version": 2,
        "preset": "tiny",
        "batch_size": BATCH,
        "command": command,
        "date": date,
        "load_before": load_before,
        "load_after": loadavg(),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
        },
        "targets": TARGETS,
        "parts": parts,
    }
    _write(result)
    for p, r in parts.get("ab", {}).items():
        if "error" in r:
            print(f"{p}: {r['error']}")
            continue
        s, a = r["sonofm"], r["open_clip"]
        print(
            f"{p}: sonofm {s['cpu_s_per_step']:.3f} CPU-s/step ({s['images_per_cpu_s']:.1f} img/CPU-s, "
            f"MFU {100 * s['mfu']:.0f}% of the {p} peak), open_clip {a['cpu_s_per_step']:.3f} "
            f"-> ratio {r['ratio_cpu']:.3f} (target >= {TARGETS['ab_ratio']}); without the text cache "
            f"{r['sonofm_no_text_cache']['cpu_s_per_step']:.3f} -> {r['ratio_cpu_no_text_cache']:.3f}"
        )
    for p, r in parts.get("job", {}).items():
        print(
            f"{p}: job {r['job']['images_per_s_from_first_step']:.1f} img/s "
            f"vs step {r['step_images_per_s']:.1f} "
            f"-> {r['ratio_images_per_s']:.3f} (whole command {r['ratio_images_per_s_whole_command']:.3f}; "
            f"CPU per image {r['ratio_cpu_per_image']:.3f}; target >= {TARGETS['job_vs_step']})"
        )
    if "loader" in parts:
        print(f"loader alone: {parts['loader']['images_per_s']:.1f} images/s")
    print(f"load average {load_before} -> {result['load_after']}; wrote {RESULTS}")


if __name__ == "__main__":
    main()
