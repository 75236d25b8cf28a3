"""Re-export: `metrics` lives in `sonofm.stats.metrics` (the statistics kit sits below the jobs)."""

from __future__ import annotations

from sonofm.stats.metrics import *  # noqa: F403
