"""The task registry and base class, re-exported: they live in `sonofm.tasks.base` (below the jobs)."""

from __future__ import annotations

from sonofm.tasks.base import (  # noqa: F401 (re-exported)
    FINETUNE_TASKS,
    LOWER_IS_BETTER,
    FinetuneTask,
    ManifestTaskDataset,
    PairDataset,
    collate,
    concat_predictions,
    get_task,
    load_builtin_tasks,
    lower_is_better,
    nanmean,
    register_finetune_task,
)
