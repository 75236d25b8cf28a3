"""Re-export: `metric_warning` lives in `sonofm.stats.metric_warning` (below the jobs)."""

from __future__ import annotations

from sonofm.stats.metric_warning import *  # noqa: F403
