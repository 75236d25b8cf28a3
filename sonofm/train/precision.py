"""Re-export: precision choice and autocast live in `sonofm.inference.precision` (below the jobs)."""

from __future__ import annotations

from sonofm.inference.precision import *  # noqa: F403
