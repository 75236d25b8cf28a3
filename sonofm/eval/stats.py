"""Re-export: the per-patient statistics live in `sonofm.stats.patients` (below the jobs)."""

from __future__ import annotations

from sonofm.stats.patients import *  # noqa: F403
