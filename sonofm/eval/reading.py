"""Re-export: `reading` lives in `sonofm.stats.reading` (the statistics kit sits below the jobs)."""

from __future__ import annotations

from sonofm.stats.reading import *  # noqa: F403
