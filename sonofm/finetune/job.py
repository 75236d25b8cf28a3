"""The fine-tuning job behind ``sonofm finetune``.

config -> image tower (a model preset, random init unless ``image.pretrained``; or the `.visual`
of any sonofm model dir, e.g. an SSL or CLIP run) -> adapter (ht / lora / linear / full) + task
head (`TaskModel`) -> the shared :class:`~sonofm.train.trainer.Trainer` (AMP, DDP, exact resume,
JSONL metrics, progress bar) -> the epoch with the best validation primary metric -> test metrics
-> a task model directory. Repeated per seed; each seed draws its own few-shot patients, so the
spread over seeds includes the sampling of the labelled data.

Run layout (``out``)::

    config.yaml             resolved job config
    finetune.jsonl          job events (seed start/end with metrics)
    seed-<s>/model/         task model dir (loads with sonofm.load_model; model_type "task_model")
    seed-<s>/metrics.jsonl  training curve (trainer)
    seed-<s>/result.json    this seed's val/test metrics, best epoch, data counts, classes it lacked
    seed-<s>/test_predictions.npz  this seed's test predictions (arrays, row ids; no pickle)
    results.json            test metrics pooled over seeds with patient-level 95% CIs, per-seed metrics
                            (`seed_stats`)
    report.html             metric tables + figures (overlays / confusion matrices) of each seed
                            (`report`)

Test statistics are per patient (`sonofm.stats.patients`): the seeds' test predictions are pooled
(every seed is scored on the same test patients) and the CI of each metric comes from
resampling whole test patients, each bringing all its seeds' rows; the point estimate is the
mean over seeds of each seed's metric. Every CI carries the number of test patients; below
`MIN_PATIENTS` no CI is given (and nothing may be called significant). Classes of the task that
the test split lacks are listed (`missing_classes`), and each seed's result lists the classes its
training rows lacked (`missing_train_classes`: those count as errors in its test metrics).

A killed job continues with ``resume=True``: finished seeds (result.json present) are kept,
an interrupted seed resumes from its latest checkpoint.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from torch import nn

from sonofm.atomic import atomic_write_json
from sonofm.config import ImageDataConfig, TrainerConfig, _deep_merge
from sonofm.data.loader import data_path, loader_workers, open_table
from sonofm.errors import DataError, UserError
from sonofm.finetune.fewshot import fewshot_subset, sample_patients
from sonofm.finetune.report import write_report
from sonofm.finetune.seed_stats import (  # noqa: F401 (re-exported: the job's statistics API)
    N_BOOT,
    PREDICTIONS,
    ROW_ID,
    format_ci,
    load_seed_samples,
    missing_test_classes,
    save_predictions,
    summarise,
    task_classes,
)
from sonofm.models.adapters import ADAPTER_KINDS, count_parameters
from sonofm.models.config import ImageTowerConfig
from sonofm.models.factory import load_spec
from sonofm.models.image_towers import ImageTower
from sonofm.models.io import load_image_tower, save_model
from sonofm.models.model_dir import ModelDir
from sonofm.models.task_model import TaskModel, TaskModelConfig, feature_geometry, freeze_unused, tower_config
from sonofm.stats.patients import MIN_PATIENTS
from sonofm.tasks.base import FinetuneTask, collate, get_task
from sonofm.tasks.predict import predict_dataset
from sonofm.train.checkpoint import BEST, LATEST, load_checkpoint
from sonofm.train.distributed import barrier, init_distributed
from sonofm.train.rundir import open_run
from sonofm.train.trainer import Trainer

log = logging.getLogger(__name__)


class FinetuneDataConfig(ImageDataConfig):
    val_split: str = "val"
    test_split: str = "test"
    fraction: float = Field(1.0, gt=0, le=1, description="share of training PATIENTS with labels")
    augment: float = Field(0.5, ge=0, le=1)
    val_fraction: float = Field(
        0.15, gt=0, lt=1, description="share of training patients held out when the val split is empty"
    )
    val_batch_size: int = Field(32, ge=1, validation_alias=AliasChoices("val_batch_size", "eval_batch_size"))


def _default_train() -> TrainerConfig:
    return TrainerConfig(
        epochs=20,
        batch_size=16,
        lr=1e-3,
        weight_decay=0.05,
        warmup_steps=20,
        log_every=5,
        accum_feature_cache=False,
        grad_clip=1.0,
    )


class FinetuneConfig(BaseModel):
    """``sonofm finetune``: adapt an image tower to one downstream task, over one or more seeds."""

    model_config = ConfigDict(extra="forbid")

    model: str = "tiny"  # model preset name (its image section) or a sonofm model directory
    # "pretrained": the model dir's weights (or the preset's image.pretrained); "random": the same
    # architecture, randomly initialised (the baseline of an SSL-vs-random comparison).
    init: Literal["pretrained", "random"] = "pretrained"
    image: dict[str, Any] = Field(default_factory=dict, description="image tower overrides (presets only)")
    task: str = "segment"
    task_options: dict[str, Any] = Field(default_factory=dict)
    adapter: str = "ht"
    adapter_options: dict[str, Any] = Field(default_factory=dict)
    seeds: list[int] = Field(default_factory=lambda: [1])
    data: FinetuneDataConfig = Field(default_factory=FinetuneDataConfig)
    train: TrainerConfig = Field(default_factory=_default_train)
    keep_checkpoints: bool = False
    max_figures: int = Field(8, ge=0)


@dataclass
class FinetuneResult:
    run_dir: Path
    results: Path
    report: Path
    summary: dict[str, Any]


# ------------------------------------------------------------------------------------ the tower
def build_tower(config: FinetuneConfig) -> nn.Module:
    """A fresh image tower: from a sonofm model dir (its `.visual`) or a model preset's image section."""
    src = Path(config.model).expanduser()
    if ModelDir(src).is_model():
        if config.image:
            raise UserError(
                f"image.* overrides apply to model presets, not to the model directory {src} "
                "(its tower architecture is fixed)"
            )
        tower = load_image_tower(src)
        if getattr(tower, "adapter_kind", None) not in (None, "linear", "full"):
            raise UserError(
                f"{src} is a task model whose tower carries a {tower.adapter_kind!r} adapter; "
                "fine-tune from the base model directory instead"
            )
        if config.init == "random":
            return ImageTower(tower_config(tower), load_pretrained=False)
        return tower.train()
    if src.exists():
        raise UserError(f"--model {src}: a directory without config.json (not a sonofm model dir)")
    spec = load_spec(config.model)
    image = _deep_merge(dict(spec.get("image") or {}), config.image)
    try:
        cfg = ImageTowerConfig.model_validate(image)
    except ValueError as e:
        raise UserError(f"invalid image tower for --model {config.model}: {e}") from e
    return ImageTower(cfg, load_pretrained=config.init == "pretrained")


# ------------------------------------------------------------------------------------ data
def _split_rows(df: pd.DataFrame, split: str) -> pd.DataFrame:
    return df[df["split"] == split]


def plan_splits(
    task: FinetuneTask, df: pd.DataFrame, config: FinetuneConfig, seed: int
) -> dict[str, pd.DataFrame]:
    """Task rows per split: few-shot train subset, val (carved from train if empty), test."""
    d = config.data
    sel = task.select(df)
    train = _split_rows(sel, d.train_split)
    val = _split_rows(sel, d.val_split)
    test = _split_rows(sel, d.test_split)
    if train.empty:
        raise DataError(f"{task.name}: no {d.train_split!r} rows after selecting the task's rows")
    if val.empty:
        held = set(sample_patients(train, d.val_fraction, seed + 10_000, task.strata(train)))
        if len(held) < train["patient_id"].nunique():
            val = train[train["patient_id"].astype(str).isin(held)]
            train = train[~train["patient_id"].astype(str).isin(held)]
            log.warning(
                "%s: split %r has no task rows; validating on %d held-out training patients",
                task.name,
                d.val_split,
                len(held),
            )
    train = fewshot_subset(train, d.fraction, seed, task.strata(train))
    return {"train": train, "val": val, "test": test}


class TaskStep:
    """Trainer step: run the task model on the batch images, score with the task's loss."""

    def __init__(self, task: FinetuneTask) -> None:
        self.task = task

    def forward(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
        return {"outputs": model(batch["image"]), "batch": batch}

    def loss(self, outputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.task.loss(outputs["outputs"], outputs["batch"])


# ------------------------------------------------------------------------------------ one seed
def _write_json(path: Path, data: Any) -> None:
    atomic_write_json(path, data, default=_json_default)


def _json_default(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    return str(v)


def _clean(d: dict[str, float]) -> dict[str, float | None]:
    return {k: (None if v is None or not np.isfinite(v) else float(v)) for k, v in d.items()}


def run_seed(
    config: FinetuneConfig,
    seed: int,
    df: pd.DataFrame,
    root: Path,
    seed_dir: Path,
    *,
    resume: bool = False,
) -> dict[str, Any]:
    """Train + select + test one seed; writes seed_dir/{model, result.json}; returns the result."""
    info = init_distributed(config.train.device)
    task = get_task(config.task, **config.task_options)
    splits = plan_splits(task, df, config, seed)
    task.prepare(splits["train"])
    # classes this seed is scored on but never trained on: they can only count as errors
    lacks = sorted(task_classes(task, pd.concat(splits.values())) - task_classes(task, splits["train"]))
    if lacks and info.is_main:
        log.warning(
            "seed %d: the training rows have no %s (its test metrics count them as errors)", seed, lacks
        )

    torch.manual_seed(seed)
    tower = build_tower(config)
    channels, strides = feature_geometry(tower)
    model_cfg = TaskModelConfig(
        image=tower_config(tower),
        adapter=config.adapter,
        adapter_options=dict(config.adapter_options),
        task=task.name,
        task_options=dict(task.options),
        feature_channels=channels,
        feature_strides=strides,
        input_frames=task.input_frames,
    )
    model = TaskModel(model_cfg, tower=tower)
    task = model.task  # the instance the model was built with (same options)
    unused = freeze_unused(model)
    if unused:
        log.info("%d parameter tensors cannot affect the output and stay frozen: %s", len(unused), unused[:4])
    params = count_parameters(model)
    size = int(model_cfg.image.image_size)
    d = config.data
    train_ds = task.dataset(splits["train"], root, "train", size, d.augment)
    val_ds = task.dataset(splits["val"], root, "val", size, False) if len(splits["val"]) else None
    test_ds = task.dataset(splits["test"], root, "test", size, False) if len(splits["test"]) else None

    metric = f"val/{task.primary_metric}"
    train_cfg = config.train.model_copy(
        update={
            "seed": seed,
            "early_stop_metric": metric if val_ds is not None else None,
            "early_stop_mode": "max" if task.higher_is_better else "min",
            "batch_size": min(config.train.batch_size, len(train_ds)),
        }
    )
    workers = loader_workers(train_cfg.workers, info.device)

    def evaluate(m: nn.Module, epoch: int) -> dict[str, float]:
        preds, rows = predict_dataset(
            m, task, val_ds, device=info.device, batch_size=d.val_batch_size, workers=workers
        )
        return {f"val/{k}": v for k, v in task.metrics(preds, rows).items()}

    trainer = Trainer(
        model,
        TaskStep(task),
        train_cfg,
        seed_dir,
        train_ds,
        collate_fn=collate,
        evaluate=evaluate if val_ds is not None else None,
        dist_info=info,
        extra_state={"config": config.model_dump(mode="json"), "seed": seed},
    )
    latest = seed_dir / "checkpoints" / LATEST
    t0 = time.perf_counter()
    fit = trainer.fit(resume="latest" if resume and latest.is_file() else None)
    train_s = time.perf_counter() - t0

    result: dict[str, Any] = {}
    if info.is_main:
        best = seed_dir / "checkpoints" / BEST
        weights = "final"
        best_epoch = fit.epoch
        if val_ds is not None and best.is_file():
            state = load_checkpoint(best)
            model.load_state_dict(state["model"])
            weights = f"best {metric} = {fit.best_metric}"
            best_epoch = int(state.get("epoch", fit.epoch))
        val_metrics = evaluate(model, fit.epoch) if val_ds is not None else {}
        test_metrics: dict[str, float] = {}
        figures: list[tuple[str, str]] = []
        if test_ds is not None:
            preds, rows = predict_dataset(
                model,
                task,
                test_ds,
                device=info.device,
                batch_size=d.val_batch_size,
                workers=workers,
                precision=train_cfg.precision,
            )
            test_metrics = task.metrics(preds, rows)
            save_predictions(seed_dir / PREDICTIONS, preds, rows)
            if config.max_figures:
                figures = task.figures(preds, rows, root)[: config.max_figures]
        else:
            log.warning("%s: split %r has no task rows; no test metrics", task.name, d.test_split)
        model_dir = seed_dir / "model"
        training = {
            "job": "finetune",
            "config": config.model_dump(mode="json"),
            "seed": seed,
            "weights": weights,
            "best_epoch": best_epoch,
            "steps": fit.step,
            "epochs": fit.epoch,
            "val": val_metrics,
            "test": test_metrics,
            "parameters": params,
            "n_train_images": len(train_ds),
            "n_train_patients": int(splits["train"]["patient_id"].nunique()),
        }
        save_model(model.cpu(), model_dir, training=_clean_tree(training))
        result = {
            "seed": seed,
            "model_dir": str(model_dir),
            "best_epoch": best_epoch,
            "epochs": fit.epoch,
            "steps": fit.step,
            "train_seconds": round(train_s, 2),
            "val": _clean(val_metrics),
            "test": _clean(test_metrics),
            "parameters": params,
            "n_images": {k: int(len(v)) for k, v in splits.items()},
            "n_patients": {k: int(v["patient_id"].nunique()) for k, v in splits.items()},
            "task_options": dict(task.options),
            "missing_train_classes": lacks,
            "figures": figures,
        }
        _write_json(seed_dir / "result.json", result)
        if not config.keep_checkpoints:
            shutil.rmtree(seed_dir / "checkpoints", ignore_errors=True)
    barrier()
    return result


def _clean_tree(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _clean_tree(v) for k, v in obj.items()}
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def finetune(
    config: FinetuneConfig,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    n_boot: int = N_BOOT,
) -> FinetuneResult:
    """Run the job as ``config`` says (every seed), write results.json and report.html into ``out``.

    `n_boot`: patient resamples behind each pooled test CI.
    """
    data = data_path(config.data.path)
    if not config.seeds:
        raise UserError("seeds: give at least one seed (e.g. --seeds 1,2,3)")
    get_task(config.task, **config.task_options)  # fail fast on a bad task or options
    if config.adapter not in ADAPTER_KINDS:  # checked before the run folder exists
        raise UserError(f"--adapter {config.adapter!r}: choose one of {', '.join(ADAPTER_KINDS)}")
    out = Path(out)
    info = init_distributed(config.train.device)
    run = open_run(
        out,
        job="finetune",
        config=config,
        resume=resume,
        overwrite=overwrite,
        continue_value=True,
        needs_checkpoint=False,
    )
    resume = bool(run.resume)  # the same config re-run keeps finished seeds and resumes the rest
    run.start(config, info.is_main)
    df = open_table(data)  # a dataset dir, manifest or shard directory (unpacked once)
    root = Path(df.attrs["root"])
    events = out / "finetune.jsonl"
    per_seed: list[dict[str, Any]] = []
    for seed in config.seeds:
        seed_dir = out / f"seed-{seed}"
        done = seed_dir / "result.json"
        if resume and done.is_file() and ModelDir(seed_dir / "model").is_model():
            log.info("seed %d already finished: %s", seed, done)
            per_seed.append(json.loads(done.read_text(encoding="utf-8")))
            continue
        _event(events, info.is_main, {"event": "seed_start", "seed": seed})
        res = run_seed(config, seed, df, root, seed_dir, resume=resume)
        if info.is_main:
            per_seed.append(res)
            _event(events, True, {"event": "seed_end", "seed": seed, "val": res["val"], "test": res["test"]})
    results_path, report_path = out / "results.json", out / "report.html"
    summary: dict[str, Any] = {}
    if info.is_main:
        task = get_task(config.task, **config.task_options)
        missing = missing_test_classes(task, df, config)
        if missing:
            log.warning(
                "%s: split %r has no rows of %s (no recall or AUC for them; macro averages omit them)",
                task.name,
                config.data.test_split,
                missing,
            )
        samples = [load_seed_samples(out / f"seed-{r['seed']}", r, config, df) for r in per_seed]
        summary = {
            "task": config.task,
            "task_options": config.task_options,
            "adapter": config.adapter,
            "model": config.model,
            "data": str(data),
            "fraction": config.data.fraction,
            "seeds": list(config.seeds),
            "primary_metric": task.primary_metric,
            "higher_is_better": task.higher_is_better,
            "statistics": {
                "ci": "95% bias-corrected bootstrap over test patients, seeds' predictions pooled",
                "n_boot": n_boot,
                "min_patients": MIN_PATIENTS,
            },
            "missing_classes": missing,
            "test": summarise(per_seed, "test", samples, n_boot=n_boot),
            "val": {
                k: {"mean": v["mean"], "values": v["values"]} for k, v in summarise(per_seed, "val").items()
            },
            "per_seed": [{k: v for k, v in r.items() if k != "figures"} for r in per_seed],
        }
        _write_json(results_path, summary)
        write_report(report_path, summary, per_seed)
    return FinetuneResult(out, results_path, report_path, summary)


def _event(path: Path, enabled: bool, event: dict[str, Any]) -> None:
    if not enabled:
        return
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"time": time.time(), **event}, default=_json_default) + "\n")
