"""Epoch plans: which samples each rank trains on, in which order, from which batch on.

``DistributedSampler`` gives deterministic per-epoch shuffles but cannot resume inside an epoch
without re-reading the batches already seen, and ``drop_last`` throws away whatever does not fill
a global batch (237 images at global batch 128 lost 109 each epoch). Here the epoch is padded to
whole global batches by repeating samples from its start (``tail="pad"``, the default), so every
sample is seen every epoch; the repeats are counted in :class:`EpochPlan` and recorded in
``training.json``. ``tail="drop"`` keeps the old behaviour and says how many samples it drops.

With ``groups`` (a label per sample, e.g. the region) and ``group_fraction`` p, about p of each
epoch's optimizer-step batches are drawn from one group only. A contrastive loss learns from its
in-batch negatives: in a batch mixing eleven regions the region alone tells most pairs apart,
while a batch of one region's images can only be matched by their findings and views (hard
negatives chosen by a label the data already has, instead of mined from the model). The rest stay
mixed, so the coarse distinctions keep being taught.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch.utils.data import Sampler

from sonofm.errors import DataError

log = logging.getLogger(__name__)

Tail = Literal["pad", "drop"]


@dataclass(frozen=True)
class EpochPlan:
    """The arithmetic of one epoch: ``steps`` micro-batches per rank of ``batch_size`` each
    (a multiple of ``accum_steps``, so the epoch ends on an optimizer step).

    ``used = steps * batch_size * world_size`` slots are filled from ``samples``; ``padded``
    slots repeat samples from the start of the epoch's order, ``dropped`` samples are left out.
    """

    samples: int
    batch_size: int
    world_size: int
    accum_steps: int
    tail: Tail
    steps: int
    used: int
    padded: int
    dropped: int

    def as_dict(self) -> dict[str, int | str]:
        return asdict(self)


def plan_epoch(
    samples: int, batch_size: int, world_size: int = 1, tail: Tail = "pad", accum_steps: int = 1
) -> EpochPlan:
    """How many micro-batches each rank draws per epoch, and what is padded or dropped.

    Padding never puts one sample twice into a global batch (a contrastive loss would score it
    as its own negative), so an epoch smaller than one global batch is an error either way.
    """
    if min(batch_size, world_size, accum_steps) < 1:
        raise ValueError(f"batch/world/accum must be >= 1: {batch_size}, {world_size}, {accum_steps}")
    if tail not in ("pad", "drop"):
        raise ValueError(f"tail must be 'pad' or 'drop', got {tail!r}")
    global_batch = batch_size * world_size * accum_steps
    if samples < global_batch:
        raise DataError(
            f"the training set has {samples} samples but one optimizer step needs {global_batch} "
            f"(batch_size {batch_size} x accum_steps {accum_steps} x {world_size} processes); "
            "lower --batch-size"
        )
    updates = math.ceil(samples / global_batch) if tail == "pad" else samples // global_batch
    used = updates * global_batch
    return EpochPlan(
        samples=samples,
        batch_size=batch_size,
        world_size=world_size,
        accum_steps=accum_steps,
        tail=tail,
        steps=updates * accum_steps,
        used=used,
        padded=max(used - samples, 0),
        dropped=max(samples - used, 0),
    )


def padded_order(order: list[int], used: int) -> list[int]:
    """``order`` cut or wrapped around to ``used`` entries (the repeats come from its start)."""
    if not order:
        return []
    reps = math.ceil(used / len(order))
    return (order * reps)[:used]


def report_plan(plan: EpochPlan, what: str = "training set") -> None:
    """Say once what the epoch arithmetic does to the data (nothing is dropped silently)."""
    if plan.padded:
        log.info(
            "%s: %d samples fill %d micro-batches per rank at global batch %d; %d repeat (tail=pad)",
            what,
            plan.samples,
            plan.steps,
            plan.batch_size * plan.world_size * plan.accum_steps,
            plan.padded,
        )
    if plan.dropped:
        log.warning(
            "%s: %d of %d samples are left out of each epoch (tail=drop, global batch %d); "
            "use train.tail=pad to see every sample",
            what,
            plan.dropped,
            plan.samples,
            plan.batch_size * plan.world_size * plan.accum_steps,
        )


class ResumableBatchSampler(Sampler[list[int]]):
    """Shuffled, rank-sharded, fixed-size batches of dataset indices.

    Each epoch permutes ``range(n)`` with a generator seeded by ``seed + epoch``, pads (or cuts)
    it to whole global batches (:func:`plan_epoch`), gives rank ``r`` every ``world_size``-th index
    starting at ``r`` (as ``DistributedSampler`` does) and cuts that into ``batch_size`` batches,
    so every rank and step has the same batch shape.
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
        tail: Tail = "pad",
        accum_steps: int = 1,
        groups: Sequence[Hashable] | None = None,
        group_fraction: float = 0.0,
    ) -> None:
        self.plan = plan_epoch(n, batch_size, world_size, tail, accum_steps)
        if not 0.0 <= group_fraction <= 1.0:
            raise ValueError(f"group_fraction must be in [0, 1], got {group_fraction}")
        if groups is not None and len(groups) != n:
            raise ValueError(f"groups has {len(groups)} labels for {n} samples")
        self.groups = list(groups) if groups is not None and group_fraction > 0 else None
        self.group_fraction = group_fraction
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
        g: torch.Generator | None = None
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        if self.groups is not None:
            return self._grouped_order(order, g)[self.rank :: self.world_size]
        return padded_order(order, self.plan.used)[self.rank :: self.world_size]

    def _grouped_order(self, order: list[int], g: torch.Generator | None) -> list[int]:
        """``order`` rearranged into optimizer-step batches, about ``group_fraction`` of them
        single-group; same length and the same samples as the ungrouped epoch.

        Each group gives ``floor(size * fraction / global_batch)`` pure batches from the front of
        its shuffled members; what is left is mixed in shuffled order. A last, partial mixed batch
        is completed (tail=pad) with samples not already in it, so no batch holds a sample twice.
        """
        assert self.groups is not None
        unit = self.plan.batch_size * self.plan.world_size * self.plan.accum_steps
        members: dict[Hashable, list[int]] = {}
        for i in order:
            members.setdefault(self.groups[i], []).append(i)
        batches: list[list[int]] = []
        grouped: set[int] = set()
        for items in members.values():
            k = int(len(items) * self.group_fraction) // unit
            for b in range(k):
                batches.append(items[b * unit : (b + 1) * unit])
            grouped.update(items[: k * unit])
        pool = [i for i in order if i not in grouped]
        full = len(pool) // unit
        batches += [pool[b * unit : (b + 1) * unit] for b in range(full)]
        rest = pool[full * unit :]
        if rest and self.plan.tail == "pad":
            taken = set(rest)
            batches.append(rest + [i for i in order if i not in taken][: unit - len(rest)])
        if g is not None:
            batches = [batches[j] for j in torch.randperm(len(batches), generator=g).tolist()]
        return [i for batch in batches for i in batch]

    def __len__(self) -> int:
        return self.plan.steps

    def __iter__(self) -> Iterator[list[int]]:
        idx = self._rank_indices()
        for b in range(self.start, len(self)):
            yield idx[b * self.batch_size : (b + 1) * self.batch_size]
