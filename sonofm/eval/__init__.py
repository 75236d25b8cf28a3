"""Evaluation: metrics with bootstrap CIs, cached embeddings, tasks, the suite runner, the HTML report.

`sonofm eval` calls `run_suite`. Names are imported lazily so `import sonofm.eval.metrics` stays
free of torch/matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "run_suite": "sonofm.eval.runner",
    "load_suite": "sonofm.eval.runner",
    "list_suites": "sonofm.eval.runner",
    "Suite": "sonofm.eval.runner",
    "embed_split": "sonofm.eval.embed",
    "embed_images": "sonofm.eval.embed",
    "embed_texts": "sonofm.eval.embed",
    "Task": "sonofm.eval.tasks.base",
    "TaskResult": "sonofm.eval.tasks.base",
    "EvalContext": "sonofm.eval.tasks.base",
    "register_task": "sonofm.eval.tasks.base",
    "write_html_report": "sonofm.eval.report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sonofm.eval' has no attribute {name!r}")
