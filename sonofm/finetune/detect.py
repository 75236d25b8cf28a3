"""Re-export: the `detect` task lives in `sonofm.tasks.detect` (task definitions sit below the jobs)."""

from __future__ import annotations

from sonofm.tasks.detect import *  # noqa: F403
