"""Evaluation: metrics with bootstrap CIs, cached embeddings, tasks, the suite runner, the HTML report.

`sonofm eval` calls `run_suite`. Names are imported lazily so `import sonofm.eval.metrics` stays
free of torch/matplotlib.
"""

from __future__ import annotations

from sonofm.lazy import lazy_exports, lazy_names

_LAZY = {
    "sonofm.eval.runner": ("run_suite", "load_suite", "list_suites", "Suite"),
    "sonofm.inference.embed": ("embed_split", "embed_images", "embed_texts"),
    "sonofm.eval.tasks.base": ("Task", "TaskResult", "EvalContext", "register_task"),
    "sonofm.eval.report": ("write_html_report",),
}
__all__ = lazy_names(_LAZY)
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
