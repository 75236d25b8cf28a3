"""A batch sampler whose order is a pure function of (seed, epoch, rank) and can start mid-epoch.

``DistributedSampler`` gives deterministic per-epoch shuffles but cannot resume inside an epoch
without re-reading the batches already seen; this sampler can (``set_start``), so a resumed run
sees exactly the batches an uninterrupted run would, without decoding the skipped ones.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableBatchSampler(Sampler[list[int]]):
    """Shuffled, rank-sharded, fixed-size batches of dataset indices.

    Each epoch permutes ``range(n)`` with a generator seeded by ``seed + epoch``, drops the tail
    that does not split evenly over ranks, gives rank ``r`` every ``world_size``-th index starting
    at ``r`` (as ``DistributedSampler`` does) and cuts that into ``batch_size`` batches, dropping
    a ragged last batch so every rank and step has the same batch shape.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.n = n
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_start(self, batch_index: int) -> None:
        """Skip the first ``batch_index`` batches of the current epoch (resume)."""
        self.start = batch_index

    def _rank_indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        usable = (self.n // self.world_size) * self.world_size
        return order[:usable][self.rank :: self.world_size]

    def __len__(self) -> int:
        return (self.n // self.world_size) // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        idx = self._rank_indices()
        for b in range(self.start, len(self)):
            yield idx[b * self.batch_size : (b + 1) * self.batch_size]
