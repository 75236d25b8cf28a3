"""Re-export: batched, cached embedding lives in `sonofm.inference.embed` (below the jobs)."""

from __future__ import annotations

from sonofm.inference.embed import *  # noqa: F403
