"""Re-export: the `segment` task lives in `sonofm.tasks.segment` (task definitions sit below the jobs)."""

from __future__ import annotations

from sonofm.tasks.segment import *  # noqa: F403
