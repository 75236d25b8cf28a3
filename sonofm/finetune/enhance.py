"""Re-export: the `enhance` task lives in `sonofm.tasks.enhance` (task definitions sit below the jobs)."""

from __future__ import annotations

from sonofm.tasks.enhance import *  # noqa: F403
