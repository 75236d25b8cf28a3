"""`sonofm demo`: the whole idea, end to end, on the embedded simulator, in minutes on a laptop.

Stages: simulate a dataset (every registered region, echo views included) -> pretrain the plain
CLIP baseline and the ultrasound-aware model (usclip + echo losses) with the tiny preset ->
evaluate both with one suite in compare mode -> summary table + `OUT/report.html` (see
`sonofm.demo_report`: contact sheet, training curves, a plain-language reading, the side-by-side
evaluation). Each stage records itself in `stages.json` when it finishes, so a second run (or a
run after a kill) reuses finished stages and resumes training from the last checkpoint; the
report is rebuilt from the finished stages' files every time (seconds).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import time
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

from sonofm.atomic import atomic_write_text
from sonofm.config import PretrainConfig, resolve_config
from sonofm.demo_report import write_demo_report
from sonofm.errors import UserError
from sonofm.sim.generator import simulate_dataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoPlan:
    """How big each stage is. `quick` is sized for an end-to-end test (about 3 minutes)."""

    n_images: int
    image_size: int
    epochs: int
    batch_size: int
    suite: str
    workers: int  # simulator processes
    model: str = "tiny-convnext"  # model preset (sonofm/presets/models)
    seed: int = 0
    log_every: int = 2  # optimizer steps between training-log records (the report's loss curves)
    # Batches of one region (data.group_by): that share of the optimizer steps holds a single
    # region, so its in-batch negatives differ in findings, not anatomy. Off in the demo: over 3
    # seeds (CLIP, 6 epochs) it lifted the learnable tags by 0.048 but cost zero-shot region 0.026
    # and the probe 0.023, all beyond chance (README "Grouped batches").
    group_by: str | None = None
    group_fraction: float = 0.25
    # DataLoader workers of the pretraining stages: "auto" starts none on a CPU (the step's threads
    # use every core; the demo's former 2 workers made each step 27% slower), a few on a GPU
    loader_workers: int | str = "auto"


QUICK = DemoPlan(n_images=240, image_size=64, epochs=2, batch_size=32, suite="quick", workers=2, log_every=1)
# 64 px, ConvNeXt tower, frozen cached text, 1,100 steps per model. More images beat more epochs at
# equal steps (README "Learning at demo scale", benchmarks/learning_curve.py): CLIP at ~600 steps
# reached zero-shot region 0.76 / 0.85 / 0.88 and probe 0.87 / 0.92 / 0.94 on 2,400 x 20 / 4,800 x
# 10 / 9,600 x 5 epochs; simulating is cheap (~6 ms an image), and more test patients tighten every
# CI. At 8,800 images, 5 -> 7 -> 10 epochs moved CLIP's zero-shot region 0.904 -> 0.918 -> 0.930 and
# probe 0.927 -> 0.935 -> 0.955, the ultrasound-aware model's echo view 0.764 -> 0.792 -> 0.856; the
# steps became affordable once training loaded its batches in-process (484 s in all, 2 cores).
# 9 epochs (990 steps): at 10 the demo took 923-982 s on the 2-core EPYC it is measured on (budget
# 900 s; stage times move ~10% between runs); at 9 it took 791 s with the ultrasound-aware model
# still above every target (zero-shot region 0.938, probe 0.954, echo view 0.856, learnable tags
# 0.908; README "What `make demo` shows").
DEFAULT = DemoPlan(
    n_images=8800, image_size=64, epochs=9, batch_size=64, suite="quick", workers=2, log_every=5
)
# Half the training captions name one finding only (data.caption_sampling): at 9,600 x 5 it raised
# CLIP's zero-shot region 0.89 -> 0.92, diagnosis 0.16 -> 0.20 and the learnable tags 0.62 -> 0.65.
CAPTION_SAMPLING = 0.5

# Baseline vs ultrasound-aware objective (docs/methods.md sections 1-2): soft-label CLIP + semantic
# loss + attribute graph, the view-informed and negation-aware terms, supervised heads on the
# manifest's region/view/attribute labels (EchoCare's hierarchical classifier, section 3) and the
# label texts (each image contrasted with the texts of its organ, view and lesion tags, section 1).
# The label texts are what made zero-shot attributes work: on CLIP (seed 0, 10 epochs) they lifted
# the learnable tags' AUC 0.741 -> 0.959, all tags 0.572 -> 0.738 and echo view 0.787 -> 0.852.
ULTRASOUND_TERMS = "soft_clip+semantic+graph+view+negation+supervised"
MODELS = {"clip": "clip", "usclip": f"{ULTRASOUND_TERMS}+label_text"}


@dataclass
class DemoResult:
    out: Path
    report: Path
    results: dict[str, Any]
    summary: list[dict[str, Any]]
    seconds: dict[str, float]


class StageLog:
    """`stages.json`: which stages finished, with their parameters and timings (atomic writes)."""

    def __init__(self, path: Path, plan: DemoPlan) -> None:
        self.path = path
        self.plan = asdict(plan)
        self.data: dict[str, Any] = {}
        if path.exists():
            self.data = json.loads(path.read_text())
            # a plan field added later has a default that keeps the older behaviour, so a demo
            # written before it existed is the same demo
            defaults = {f.name: f.default for f in fields(DemoPlan) if f.default is not MISSING}
            if {**defaults, **(self.data.get("plan") or {})} != self.plan:
                raise UserError(
                    f"{path.parent} holds a demo made with other settings ({self.data.get('plan')}); "
                    "use a new --out or delete it"
                )
            # the objectives are not in the plan: a trained stage of another loss is not this demo's
            trained = [k for k in self.data.get("stages", {}) if k.startswith("pretrain-")]
            saved = self.data.get("objectives")
            if trained and saved != MODELS:
                raise UserError(
                    f"{path.parent} holds models trained with other objectives "
                    f"({saved or 'from before the objectives were recorded'}; now {MODELS}); "
                    "use a new --out or delete it"
                )
        self.data["plan"] = self.plan
        self.data["objectives"] = dict(MODELS)
        self.data.setdefault("stages", {})

    def done(self, name: str) -> bool:
        return name in self.data["stages"]

    def finish(self, name: str, seconds: float, **info: Any) -> None:
        self.data["stages"][name] = {"seconds": round(seconds, 2), **info}
        atomic_write_text(self.path, json.dumps(self.data, indent=2))

    def seconds(self) -> dict[str, float]:
        return {k: v["seconds"] for k, v in self.data["stages"].items()}


def _stage(
    stages: StageLog, name: str, fn: Callable[[], dict[str, Any] | None], notify: Callable[[str], None]
) -> None:
    if stages.done(name):
        notify(f"{name}: already done, reusing it")
        return
    notify(f"{name} ...")
    t0 = time.perf_counter()
    info = fn() or {}
    stages.finish(name, time.perf_counter() - t0, **info)


def _pretrain(data: Path, run: Path, loss: str, plan: DemoPlan) -> dict[str, Any]:
    from sonofm.pretrain import pretrain  # lazy: keeps torch out of the demo module

    config = resolve_config(
        PretrainConfig,
        preset="tiny",
        values={
            "model": plan.model,
            # captions (findings first, taxonomy words, half of them naming one finding) and measured
            # image statistics: the recipe
            "data": {
                "path": str(data),
                "text": "caption",
                "normalize": "data",
                "caption_sampling": CAPTION_SAMPLING,
                "group_by": plan.group_by,
                "group_fraction": plan.group_fraction,
            },
            "loss": {"name": loss},
            "train": {
                "epochs": plan.epochs,
                "batch_size": plan.batch_size,
                "seed": plan.seed,
                "workers": plan.loader_workers,
                "warmup_steps": 20,
                "lr": 1e-3,
                "log_every": plan.log_every,
                # bf16 where the CPU/GPU computes it natively (~1.5x faster here), else fp32
                "precision": "auto",
                # where workers start (a GPU machine): forked, since the trainer starts a loader
                # every epoch (train and validation) and forkserver workers pay a fresh interpreter
                # + torch import each time (~11 s an epoch with the 64 px model, whose heap is small
                # enough to fork)
                "worker_start": "fork",
            },
        },
    )
    resume = "latest" if (run / "checkpoints").is_dir() and any((run / "checkpoints").iterdir()) else None
    result = pretrain(config, run, resume=resume)
    return {"steps": result.fit.step, "val": result.fit.last_val}


def run_demo(
    out: str | Path = "demo-out", *, quick: bool = False, notify: Callable[[str], None] | None = None
) -> DemoResult:
    """Run (or resume) the demo into `out`; returns where the report is and the summary rows."""
    plan = QUICK if quick else DEFAULT
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say = notify or (lambda msg: log.info(msg))
    stages = StageLog(out / "stages.json", plan)
    data = out / "data"

    def simulate() -> dict[str, Any]:
        simulate_dataset(
            data,
            plan.n_images,
            size=plan.image_size,
            seed=plan.seed,
            workers=plan.workers,
            preview=True,
            progress=True,
        )
        return {"images": plan.n_images}

    _stage(stages, "simulate", simulate, say)
    for name, loss in MODELS.items():
        _stage(
            stages,
            f"pretrain-{name}",
            lambda n=name, lo=loss: _pretrain(data, out / "runs" / n, lo, plan),
            say,
        )

    eval_dir = out / "eval"

    def evaluate() -> dict[str, Any]:
        from sonofm.eval.runner import run_suite  # lazy: keeps torch out of the demo module

        models = [str(out / "runs" / name / "model") for name in MODELS]
        run_suite(models, data, eval_dir, plan.suite, cache_dir=False, workers=0)
        return {}

    _stage(stages, "eval", evaluate, say)
    results = json.loads((eval_dir / "results.json").read_text())
    summary = summarize(results)
    machine = machine_info()
    atomic_write_text(
        out / "summary.json",
        json.dumps({"plan": asdict(plan), "machine": machine, "rows": summary}, indent=2),
    )
    report = write_demo_report(
        out,
        results=results,
        headline=HEADLINE,
        plan=asdict(plan),
        stages=stages.data["stages"],
        machine=machine,
        runs={name: out / "runs" / name for name in MODELS},
        names=(f"{NAMES[0]} ({MODEL_KEYS[0]})", f"{NAMES[1]} ({MODEL_KEYS[1]})"),
    )
    return DemoResult(out, report, results, summary, stages.seconds())


# How the report names the two models (same order as MODELS).
NAMES = ("baseline CLIP", "ultrasound-aware")
MODEL_KEYS = tuple(MODELS)


def machine_info() -> dict[str, Any]:
    """CPU model, cores available to this process, RAM and torch threads (for reports and benchmarks)."""
    import torch  # lazy: keeps torch out of the demo module

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        names = [ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")]
        cpu = names[0].split(":", 1)[1].strip() if names else cpu
    ram = None
    with contextlib.suppress(ValueError, OSError, AttributeError):
        ram = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "cores": cores,
        "ram_gib": ram,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


# The headline numbers of the summary table: (task, metric, label). A metric ending in "/" is
# the mean over that family (e.g. the per-dimension mean AUCs).
HEADLINE = (
    ("retrieval", "image_to_text/R@1", "image->text R@1"),
    ("retrieval", "text_to_image/R@1", "text->image R@1"),
    ("retrieval", "image_to_text/R@10", "image->text R@10"),
    ("retrieval", "text_to_image/R@10", "text->image R@10"),
    ("zeroshot/diagnosis", "acc1", "zero-shot diagnosis acc"),
    ("zeroshot/region", "acc1", "zero-shot region acc"),
    ("zeroshot/view", "acc1", "zero-shot echo view acc"),
    ("zeroshot/attributes", "mean_auc/", "zero-shot attribute AUC (mean)"),
    ("zeroshot/attributes_learnable", "mean_auc", "zero-shot attribute AUC, learnable tags"),
    ("zeroshot/findings", "mean_auc/", "zero-shot finding AUC, pos/neg prompts (mean)"),
    ("linear_probe/region", "acc1", "linear probe region acc"),
    ("knn/region", "acc1", "kNN region acc"),
    ("regression_probe", "lvef_pct/mae", "EF regression MAE (points)"),
)


def _value(m: Any) -> float | None:
    value = m.get("value") if isinstance(m, dict) else m
    return None if value is None else float(value)


def _find_metric(tasks: dict[str, Any], task: str, metric: str) -> float | None:
    metrics = tasks.get(task, {}).get("metrics", {})
    if not metric.endswith("/"):
        return _value(metrics[metric]) if metric in metrics else None
    vals = [v for k, m in metrics.items() if k.startswith(metric) and (v := _value(m)) is not None]
    vals = [v for v in vals if v == v]  # drop NaN (single-class AUCs)
    return sum(vals) / len(vals) if vals else None


def summarize(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per headline metric, one column per model."""
    rows = []
    for task, metric, label in HEADLINE:
        row: dict[str, Any] = {"metric": label}
        for m in results["models"]:
            row[m["label"]] = _find_metric(m["tasks"], task, metric)
        if any(v is not None for k, v in row.items() if k != "metric"):
            rows.append(row)
    return rows
