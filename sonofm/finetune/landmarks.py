"""Re-export: the `landmarks` task lives in `sonofm.tasks.landmarks` (task definitions sit below the jobs)."""

from __future__ import annotations

from sonofm.tasks.landmarks import *  # noqa: F403
