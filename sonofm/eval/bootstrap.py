"""Re-export: `bootstrap` lives in `sonofm.stats.bootstrap` (the statistics kit sits below the jobs)."""

from __future__ import annotations

from sonofm.stats.bootstrap import *  # noqa: F403
