"""Re-export: `exact_ranks` lives in `sonofm.stats.exact_ranks` (the statistics kit sits below the jobs)."""

from __future__ import annotations

from sonofm.stats.exact_ranks import *  # noqa: F403
