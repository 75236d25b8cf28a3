"""Evaluation tasks. Importing this package registers the built-in task types.

Add a task: subclass `Task`, set `kind`, implement `run(ctx) -> TaskResult`, decorate with
`@register_task`; suite YAML then accepts `- {type: <kind>, ...options}`.
"""

from __future__ import annotations

from sonofm.eval.tasks.attribute_bounds import ZeroShotLearnableAttributes
from sonofm.eval.tasks.base import TASKS, EvalContext, Task, TaskResult, build_task, register_task
from sonofm.eval.tasks.probes import KNNProbe, LinearProbe, RegressionProbe
from sonofm.eval.tasks.retrieval import Retrieval
from sonofm.eval.tasks.zeroshot import ZeroShotAttributes, ZeroShotClassification, ZeroShotFindings

__all__ = [
    "TASKS",
    "EvalContext",
    "KNNProbe",
    "LinearProbe",
    "RegressionProbe",
    "Retrieval",
    "Task",
    "TaskResult",
    "ZeroShotAttributes",
    "ZeroShotClassification",
    "ZeroShotFindings",
    "ZeroShotLearnableAttributes",
    "build_task",
    "register_task",
]
