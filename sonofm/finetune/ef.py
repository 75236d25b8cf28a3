"""Re-export: the `ef` task lives in `sonofm.tasks.ef` (task definitions sit below the jobs)."""

from __future__ import annotations

from sonofm.tasks.ef import *  # noqa: F403
