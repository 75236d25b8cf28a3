"""Fine-tuning of image towers on downstream tasks (segmentation, classification, landmarks, ...).

`tasks` holds the task registry and base class, `job` the end-to-end job behind
`sonofm finetune`, `fewshot` the patient-level label fractions. Task modules register
themselves on import; `sonofm.finetune.tasks.get_task` imports the built-in ones on demand.
"""

from __future__ import annotations

from sonofm.tasks.base import FINETUNE_TASKS, FinetuneTask, collate, get_task, register_finetune_task

__all__ = ["FINETUNE_TASKS", "FinetuneTask", "collate", "get_task", "register_finetune_task"]
