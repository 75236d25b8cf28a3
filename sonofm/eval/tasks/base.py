"""The task interface: `Task.run(ctx) -> TaskResult`, a registry, and the shared `EvalContext`.

A task reads what it needs from the context (embeddings per split, manifest rows aligned with
them, the model for prompts or dense heads) and returns named metrics, each with a bootstrap CI
and the per-sample arrays it was computed from, so compare mode can re-run a paired bootstrap on
exactly the same samples. Dense tasks (segmentation, landmarks) implement the same `run`, using
`ctx.model` and `ctx.rows(split)` (image/mask paths) instead of the cached embeddings.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from sonofm.errors import UserError
from sonofm.inference.embed import SplitEmbeddings, embed_texts
from sonofm.stats.metrics import (
    CI,
    MetricWarning,
    acc1,
    balanced_accuracy,
    bootstrap_ci,
    expected_calibration_error,
    macro_auc,
    n_groups,
)
from sonofm.tasks.labels import label_values  # noqa: F401 (re-exported: eval kinds read labels here)

log = logging.getLogger(__name__)

Fn = Callable[..., float]


@dataclass
class TaskResult:
    """Metrics (name -> CI), their per-sample inputs (for paired bootstrap), and data for plots."""

    name: str
    kind: str
    metrics: dict[str, CI] = field(default_factory=dict)
    samples: dict[str, tuple[Fn, tuple[np.ndarray, ...]]] = field(default_factory=dict)
    groups: dict[str, np.ndarray | None] = field(default_factory=dict)
    higher_is_better: dict[str, bool] = field(default_factory=dict)
    plots: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "info": self.info}
        if self.skipped:
            out["skipped"] = self.skipped
        out["metrics"] = {k: v.to_dict() for k, v in self.metrics.items()}
        return out


class Task(ABC):
    """Base class. Subclasses set `kind`, take their options as keyword arguments, implement `run`."""

    kind: ClassVar[str] = ""
    splits: tuple[str, ...] = ("test",)  # splits whose embeddings must exist before `run`
    needs_embeddings: ClassVar[bool] = True  # False for dense tasks that run the model on pixels themselves
    needs_texts: ClassVar[bool] = False  # True if `run` reads the rows' text embeddings (of `splits`)

    def __init__(self, name: str | None = None) -> None:
        self.name = name or self.kind

    @abstractmethod
    def run(self, ctx: EvalContext) -> TaskResult:
        """Compute the task's metrics on `ctx`."""

    def result(self) -> TaskResult:
        return TaskResult(self.name, self.kind)


class SplitTask(Task):
    """A task on one split (``self.split``, default test): `run` skips a split without images and
    hands the split's rows to `run_split`."""

    def __init__(self, name: str | None = None, split: str = "test") -> None:
        super().__init__(name)
        self.split = split
        self.splits = (split,)

    def run(self, ctx: EvalContext) -> TaskResult:
        res = self.result()
        if not ctx.has_split(self.split):
            res.skipped = f"no {self.split} images"
            return res
        return self.run_split(ctx, res, ctx.rows(self.split))

    @abstractmethod
    def run_split(self, ctx: EvalContext, res: TaskResult, rows: pd.DataFrame) -> TaskResult:
        """Compute the metrics into ``res`` from the split's rows (aligned with its embeddings)."""


TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make a task usable from suite YAML as `type: <cls.kind>`."""
    if not cls.kind:
        raise ValueError(f"{cls.__name__} needs a `kind`")
    TASKS[cls.kind] = cls
    return cls


# Task kinds whose modules live with their job (fine-tuning, the VLM): imported when a suite names them.
EXTERNAL_TASKS: dict[str, str] = {
    "finetune": "sonofm.eval.tasks.finetune",
    "report_generation": "sonofm.vlm.tasks",
    "vqa": "sonofm.vlm.tasks",
}


def build_task(spec: dict[str, Any], where: str = "suite") -> Task:
    """A task from a suite entry {type: kind, name?: ..., **options}; errors name the entry.

    The built-in tasks register when the `sonofm.eval.tasks` package is imported: call this as
    `sonofm.eval.tasks.build_task` (this module stays below the task modules, no import cycle).
    """
    spec = dict(spec)
    kind = spec.pop("type", None)
    if kind not in TASKS and kind in EXTERNAL_TASKS:
        importlib.import_module(EXTERNAL_TASKS[kind])  # registers the task (heavier imports, on demand)
    if kind not in TASKS:
        known = sorted(set(TASKS) | set(EXTERNAL_TASKS))
        raise UserError(f"{where}: unknown task type {kind!r}; known: {', '.join(known)}")
    try:
        return TASKS[kind](**spec)
    except TypeError as e:
        raise UserError(f"{where}: bad options for task {kind!r}: {e}") from e


# ------------------------------------------------------------------ labels
# ------------------------------------------------------------------ context
@dataclass
class EvalContext:
    """Everything a task may use; one per evaluated model."""

    model: torch.nn.Module
    df: pd.DataFrame  # the full manifest
    root: Path
    embeddings: dict[str, SplitEmbeddings]
    n_boot: int = 1000
    seed: int = 0
    bootstrap_unit: str = "patient"  # or "sample": resample images (patients still counted)
    device: torch.device | None = None
    precision: str = "fp32"
    _rows: dict[str, pd.DataFrame] = field(default_factory=dict)
    _prompt_cache: dict[str, np.ndarray] = field(default_factory=dict)

    def rows(self, split: str) -> pd.DataFrame:
        """Manifest rows of `split`, in the order of `embeddings[split]` (skipped images removed)."""
        if split not in self._rows:
            if split not in self.embeddings:
                raise UserError(f"split {split!r} has no embeddings (is it present in the manifest?)")
            part = self.df[self.df["split"] == split].set_index("id", drop=False)
            self._rows[split] = part.loc[self.embeddings[split].ids].reset_index(drop=True)
        return self._rows[split]

    def has_split(self, split: str) -> bool:
        return split in self.embeddings and len(self.embeddings[split].ids) > 0

    @property
    def logit_scale(self) -> float:
        m = self.model
        cap = float(getattr(getattr(m, "config", None), "max_logit_scale", 100.0))
        return float(min(m.logit_scale.detach().exp().item(), cap))

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Normalised embeddings of prompt texts (memoised per context)."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._prompt_cache]
        if missing:
            emb = embed_texts(self.model, missing, device=self.device, precision=self.precision)
            self._prompt_cache.update(zip(missing, emb, strict=True))
        return np.stack([self._prompt_cache[t] for t in texts]) if texts else np.zeros((0, 0), np.float32)

    def class_weights(self, prompts: list[list[str]]) -> np.ndarray:
        """(C, D) zero-shot classifier: mean of each class's normalised prompt embeddings, renormalised."""
        self.encode_texts([t for p in prompts for t in p])  # one batched pass for all classes
        w = np.stack([self.encode_texts(p).mean(0) for p in prompts])
        return w / np.linalg.norm(w, axis=1, keepdims=True).clip(1e-12)

    def groups(self, rows: pd.DataFrame) -> np.ndarray | None:
        """Patient id per row: the resampling unit (bootstrap_unit "patient") and the count every CI shows."""
        if "patient_id" not in rows.columns:
            return None
        return rows["patient_id"].astype(str).to_numpy()

    def add_metric(
        self,
        res: TaskResult,
        name: str,
        fn: Fn,
        *arrays: np.ndarray,
        groups: np.ndarray | None = None,
        higher_is_better: bool = True,
    ) -> CI:
        """Compute `fn(*arrays)` with its bootstrap CI, store it and its inputs in `res`.

        `groups` are the rows' patient ids: whole patients are resampled (bootstrap_unit
        "patient") and the CI records how many patients it rests on either way.
        """
        arrays = tuple(np.asarray(a) for a in arrays)
        unit_groups = groups if self.bootstrap_unit == "patient" else None
        # undefined-metric warnings (one class in the split, ...) go into the result, not the console
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", MetricWarning)
            ci = bootstrap_ci(fn, *arrays, n_boot=self.n_boot, seed=self.seed, groups=unit_groups)
        if unit_groups is None and groups is not None:
            ci = replace(ci, n_patients=n_groups(groups))
        msgs = sorted({str(w.message) for w in caught if issubclass(w.category, MetricWarning)})
        if msgs:
            res.info.setdefault("warnings", {})[name] = msgs
            log.debug("%s/%s: %s", res.name, name, "; ".join(msgs))
        res.metrics[name] = ci
        res.samples[name] = (fn, arrays)
        res.groups[name] = unit_groups
        res.higher_is_better[name] = higher_is_better
        return ci

    def add_classification_metrics(
        self, res: TaskResult, y: np.ndarray, probs: np.ndarray, groups: np.ndarray | None, prefix: str = ""
    ) -> None:
        """Top-1 and balanced accuracy, macro AUC and calibration error of class probabilities."""
        self.add_metric(res, f"{prefix}acc1", acc1, y, probs, groups=groups)
        self.add_metric(res, f"{prefix}balanced_accuracy", balanced_accuracy, y, probs, groups=groups)
        self.add_metric(res, f"{prefix}macro_auc", macro_auc, y, probs, groups=groups)
        ece = expected_calibration_error
        self.add_metric(res, f"{prefix}ece", ece, y, probs, groups=groups, higher_is_better=False)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)
