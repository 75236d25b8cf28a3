"""Task definitions below the jobs: what a downstream problem needs (rows, items, head, loss,
predictions, metrics, figures), used by the task model (`sonofm.models.task_model`), the
fine-tuning job and the eval kind ``finetune``.

`base` holds the registry and base class, `predict` runs a model over a task dataset, `labels`
reads class labels from the manifest, and one module per built-in task (`segment`, `classify`,
`landmarks`, `ef`, `detect`, `enhance`) registers itself on import (`get_task` imports them on
demand).
"""

from __future__ import annotations

from sonofm.tasks.base import FINETUNE_TASKS, FinetuneTask, collate, get_task, register_finetune_task

__all__ = ["FINETUNE_TASKS", "FinetuneTask", "collate", "get_task", "register_finetune_task"]
