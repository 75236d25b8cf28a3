"""Re-export: `health` lives in `sonofm.stats.health` (the statistics kit sits below the jobs)."""

from __future__ import annotations

from sonofm.stats.health import *  # noqa: F403
