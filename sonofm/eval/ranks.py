"""Re-export: `ranks` lives in `sonofm.stats.ranks` (the statistics kit sits below the jobs)."""

from __future__ import annotations

from sonofm.stats.ranks import *  # noqa: F403
