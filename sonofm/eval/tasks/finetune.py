"""Eval task kind ``finetune``: score a fine-tuned task model (``sonofm finetune`` output) on a split.

It reuses the model's own `FinetuneTask` (rebuilt from the model's config: same rows, items,
predictions, metrics and figures as the fine-tuning job), adds bootstrap CIs for the metrics the
task exposes per sample (`FinetuneTask.metric_fns`; resampled per patient with
``bootstrap_unit: patient``), and puts the task's figures (segmentation overlays, confusion
matrices, ...) into the HTML report. Dense: runs the model on pixels, needs no embeddings.

Suite entry: ``{type: finetune, task: segment, split: test}`` (``task`` is optional: when given,
a model fine-tuned for another task is reported as skipped rather than failing the suite).
"""

from __future__ import annotations

import logging
from typing import ClassVar

import torch

from sonofm.errors import UserError
from sonofm.eval.tasks.base import EvalContext, Task, TaskResult, register_task
from sonofm.stats.metrics import CI
from sonofm.tasks.predict import predict_dataset

log = logging.getLogger(__name__)


@register_task
class FinetuneEval(Task):
    kind: ClassVar[str] = "finetune"
    needs_embeddings: ClassVar[bool] = False

    def __init__(
        self,
        name: str | None = None,
        task: str | None = None,
        split: str = "test",
        batch_size: int = 32,
        max_figures: int = 8,
    ) -> None:
        super().__init__(name or (f"finetune_{task}" if task else "finetune"))
        self.task_name = task
        self.split = split
        self.splits = (split,)
        self.batch_size = int(batch_size)
        self.max_figures = int(max_figures)

    def run(self, ctx: EvalContext) -> TaskResult:
        res = self.result()
        model = ctx.model
        task = getattr(model, "task", None)
        if getattr(model, "model_type", None) != "task_model" or task is None:
            res.skipped = f"{type(model).__name__} is not a fine-tuned task model (sonofm finetune output)"
            return res
        if self.task_name is not None and task.name != self.task_name:
            res.skipped = f"the model was fine-tuned for {task.name!r}, not {self.task_name!r}"
            return res
        try:
            rows = task.select(ctx.df)
        except UserError as err:
            res.skipped = str(err)
            return res
        rows = rows[rows["split"] == self.split]
        if rows.empty:
            res.skipped = f"no {task.name} rows in split {self.split!r}"
            return res
        size = int(model.config.image.image_size)
        ds = task.dataset(rows, ctx.root, self.split, size, False)
        device = ctx.device or torch.device("cpu")
        preds, rows = predict_dataset(
            model, task, ds, device=device, batch_size=self.batch_size, precision=ctx.precision
        )
        groups = ctx.groups(rows)
        for metric, (fn, arrays, higher) in task.metric_fns(preds, rows).items():
            ctx.add_metric(res, metric, fn, *arrays, groups=groups, higher_is_better=higher)
        nan = float("nan")
        for metric, value in task.metrics(preds, rows).items():
            if metric not in res.metrics:  # no per-sample form: point value without a CI
                res.metrics[metric] = CI(float(value), nan, nan, len(rows))
                res.higher_is_better[metric] = task.metric_higher_is_better(metric)
        if self.max_figures:
            res.plots["images"] = task.figures(preds, rows, ctx.root)[: self.max_figures]
        res.info.update(
            {"task": task.name, "options": dict(task.options), "split": self.split, "n_images": len(rows)}
        )
        return res
