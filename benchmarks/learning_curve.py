# SPDX-License-Identifier: Apache-2.0
"""Learning curve of the demo's recipe: headline metrics vs optimizer steps, CLIP and ultrasound-aware.

Each point is a full training run with its own schedule (warmup + cosine to that many epochs),
not a snapshot of one long run: the question it answers is "how many epochs should a run of this
size get", which is how the demo's default plan (``sonofm.demo.DEFAULT``) picks its epochs. The
recipe is the demo's own (``sonofm.demo._pretrain``: tiny-convnext at 64 px, captions, measured
normalisation); only the epoch count varies. Each trained model is evaluated with the demo's suite
(``quick``) and the demo's headline rows (``sonofm.demo.summarize``); wall times are recorded
per run, so the curve also says what each point costs on this machine.

Resumable: runs whose ``model/`` exists are not retrained; results are written atomically after
every run to ``benchmarks/results/learning_curve.json`` (``--results`` to change), keeping the
points of earlier invocations (so objectives can be run one at a time).

Usage::

    python benchmarks/learning_curve.py --data DATA_DIR --epochs 5,10,20,30 --work .sonofm-cache/lc
    python benchmarks/learning_curve.py --images 4800 --epochs 10 --objectives clip   # more data, same steps
    python benchmarks/learning_curve.py --quick      # tiny smoke run (240 images, 1-2 epochs)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

# `python benchmarks/x.py` puts benchmarks/ first on sys.path, where a script named like a stdlib
# module (benchmarks/ssl.py) would shadow it: keep only the real paths.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "learning_curve.json"


def _simulate(data: Path, plan: Any) -> None:
    from sonofm.sim.generator import simulate_dataset

    simulate_dataset(data, plan.n_images, size=plan.image_size, seed=plan.seed, workers=plan.workers)


def _evaluate(model_dir: Path, data: Path, out: Path, suite: str) -> dict[str, Any]:
    from sonofm.eval.runner import run_suite

    if not (out / "results.json").is_file():
        run_suite([str(model_dir)], data, out, suite, cache_dir=False, workers=0)
    return json.loads((out / "results.json").read_text())


def run_point(data: Path, work: Path, name: str, loss: str, plan: Any) -> dict[str, Any]:
    """Train (unless already trained) and evaluate one (objective, epochs) point."""
    from sonofm.demo import CAPTION_SAMPLING, _pretrain, machine_info, summarize

    # the recipe changes between sessions (caption sampling joined it): a point says which it used,
    # and a run trained with another recipe is never reused under the same name
    sampling = f"-cs{CAPTION_SAMPLING:g}" if CAPTION_SAMPLING else ""
    run = work / f"{name}-n{plan.n_images}-e{plan.epochs}-s{plan.seed}{sampling}"
    info: dict[str, Any] = {
        "objective": name,
        "loss": loss,
        "n_images": plan.n_images,
        "epochs": plan.epochs,
        "seed": plan.seed,
        "caption_sampling": CAPTION_SAMPLING,
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_info(),
    }
    t0 = time.perf_counter()
    if not (run / "model" / "config.json").is_file():
        trained = _pretrain(data, run, loss, plan)
        info["train_s"] = round(time.perf_counter() - t0, 1)
        info["steps"] = trained["steps"]
    else:  # trained earlier (or by `sonofm demo`): its log says how far it went
        steps = [json.loads(line).get("step") for line in (run / "metrics.jsonl").read_text().splitlines()]
        info["steps"] = max((s for s in steps if s is not None), default=None)
    t1 = time.perf_counter()
    results = _evaluate(run / "model", data, run / "eval", plan.suite)
    info["eval_s"] = round(time.perf_counter() - t1, 1)
    info["metrics"] = {
        row["metric"]: next(v for k, v in row.items() if k != "metric") for row in summarize(results)
    }
    return info


def _key(point: dict[str, Any]) -> tuple[Any, ...]:
    sampling = point.get("caption_sampling", 0.0)  # points from before caption sampling: none
    return (point["objective"], point.get("n_images"), point["epochs"], point["seed"], sampling)


def _write(path: Path, payload: dict[str, Any]) -> None:
    from sonofm.atomic import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(payload, indent=2))


def table(points: list[dict[str, Any]]) -> str:
    """Markdown: one row per (objective, images, epochs), the demo's headline metrics as columns."""
    if not points:
        return ""
    metrics = list(points[0]["metrics"])
    head = "| objective | images | epochs | steps | train s | " + " | ".join(metrics) + " |"
    head = head.replace("| epochs |", "| epochs | caption sampling |")
    lines = [head, "|" + "---|" * (6 + len(metrics))]
    for p in sorted(points, key=lambda p: (p["objective"], p.get("n_images") or 0, p["epochs"])):
        vals = [p["metrics"].get(m) for m in metrics]
        cells = ["-" if v is None else f"{v:.3f}" for v in vals]
        lines.append(
            f"| {p['objective']} | {p.get('n_images', '-')} | {p['epochs']} | "
            f"{p.get('caption_sampling', 0.0):g} | {p.get('steps', '-')} | "
            f"{p.get('train_s', '-')} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from sonofm.demo import DEFAULT, MODELS, machine_info

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, help="a simulated dataset (default: simulate the demo plan's)")
    parser.add_argument("--work", type=Path, default=ROOT / ".sonofm-cache" / "learning-curve")
    parser.add_argument("--epochs", default="5,10,20,30", help="comma-separated epoch budgets")
    parser.add_argument("--objectives", default=",".join(MODELS), help=f"from {sorted(MODELS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=int, help="images to simulate (default: the demo plan's)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="240 images, 1-2 epochs: a smoke run")
    args = parser.parse_args(argv)

    plan = dataclasses.replace(DEFAULT, seed=args.seed, n_images=args.images or DEFAULT.n_images)
    epochs = [int(e) for e in args.epochs.split(",") if e]
    if args.quick:
        plan = dataclasses.replace(plan, n_images=240, batch_size=32)
        epochs = [1, 2]
    data = args.data or args.work / f"data-n{plan.n_images}"
    if not (data / "manifest.parquet").is_file():
        _simulate(data, plan)
    objectives = {n: MODELS[n] for n in args.objectives.split(",") if n}
    payload: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_info(),
        "data": str(data),
        "plan": dataclasses.asdict(plan),
        "command": " ".join(
            ["python benchmarks/learning_curve.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "points": [],
    }
    if args.results.is_file():  # keep the points of earlier invocations (other objectives/epochs)
        payload["points"] = json.loads(args.results.read_text()).get("points", [])
    for name, loss in objectives.items():
        for e in epochs:
            point = run_point(data, args.work, name, loss, dataclasses.replace(plan, epochs=e))
            key = _key(point)
            others = [p for p in payload["points"] if _key(p) != key]
            payload["points"] = [*others, point]
            print(json.dumps(point), flush=True)
            _write(args.results, payload)
    print(table(payload["points"]))


if __name__ == "__main__":
    main()
