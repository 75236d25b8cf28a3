"""Batches that are the same every pass are decoded once.

A validation split without augmentation, read in a fixed order with fixed texts, gives the same
tensors at every validation; decoding and tokenising them again each epoch was about a fifth of
the cost of validating the tiny preset (317 images of 128 px). :class:`ReplayLoader` keeps the
first pass's batches while they fit in ``max_bytes`` and replays them; a split too large to keep
is streamed from its loader every time, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

import torch

log = logging.getLogger(__name__)


def batch_nbytes(batch: Any) -> int:
    """Bytes held by the tensors of a (nested) batch."""
    if isinstance(batch, torch.Tensor):
        return batch.element_size() * batch.nelement()
    if isinstance(batch, dict):
        return sum(batch_nbytes(v) for v in batch.values())
    if isinstance(batch, list | tuple):
        return sum(batch_nbytes(v) for v in batch)
    return 0


class ReplayLoader:
    """Iterate ``loader`` once, keeping its batches (up to ``max_bytes`` of tensors); later
    iterations replay the kept batches without touching the loader.

    Only correct for a loader whose every pass yields the same batches (no augmentation, no
    shuffling, no sampled text): the caller decides that. The first pass is always complete even
    when the budget is exceeded midway (then nothing is kept and every pass streams).
    """

    def __init__(self, loader: Iterable[Any], max_bytes: int = 256 * 2**20) -> None:
        self.loader = loader
        self.max_bytes = max_bytes
        self._kept: list[Any] | None = None
        self._too_large = False

    @property
    def replaying(self) -> bool:
        return self._kept is not None

    def __iter__(self) -> Iterator[Any]:
        if self._kept is not None:
            yield from self._kept
            return
        if self._too_large:
            yield from self.loader
            return
        kept: list[Any] | None = []
        size = 0
        for batch in self.loader:
            if kept is not None:
                size += batch_nbytes(batch)
                if size > self.max_bytes:
                    log.info(
                        "validation batches exceed %d MB; they are re-read each time", self.max_bytes >> 20
                    )
                    kept, self._too_large = None, True
                else:
                    kept.append(batch)
            yield batch
        if kept is not None:
            self._kept = kept
