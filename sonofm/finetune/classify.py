"""Re-export: the `classify` task lives in `sonofm.tasks.classify` (task definitions sit below the jobs)."""

from __future__ import annotations

from sonofm.tasks.classify import *  # noqa: F403
