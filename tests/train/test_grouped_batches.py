"""Single-group batches (data.group_by): every sample still seen once per epoch, the asked share of
batches pure, pure across ranks, resumable, and wired through `sonofm pretrain`."""

from __future__ import annotations

from collections import Counter

import pytest

from sonofm.train.sampler import ResumableBatchSampler


def _groups(sizes: dict[str, int]) -> list[str]:
    labels = [g for g, n in sizes.items() for _ in range(n)]
    # interleave so that contiguous index ranges are not already grouped
    return [labels[(i * 7919) % len(labels)] for i in range(len(labels))]


def _epoch(sampler: ResumableBatchSampler, epoch: int = 0) -> list[list[int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_grouped_epoch_keeps_every_sample_and_makes_the_share_of_pure_batches() -> None:
    groups = _groups({"heart": 400, "liver": 130, "breast": 131, "kidney": 99})
    n = len(groups)
    sampler = ResumableBatchSampler(n, 32, seed=3, groups=groups, group_fraction=0.5)
    batches = _epoch(sampler)
    assert len(batches) == sampler.plan.steps == -(-n // 32)
    seen = Counter(i for b in batches for i in b)
    assert set(seen) == set(range(n))  # nothing dropped
    assert sum(seen.values()) - n == sampler.plan.padded  # only the planned repeats
    assert all(len(set(b)) == len(b) == 32 for b in batches)  # no sample twice in a batch
    pure = [b for b in batches if len({groups[i] for i in b}) == 1]
    # floor(size * 0.5 / 32) per group: heart 6, liver 2, breast 2, kidney 1
    assert len(pure) == 11
    assert Counter(groups[b[0]] for b in pure) == {"heart": 6, "liver": 2, "breast": 2, "kidney": 1}
    # the pure batches are spread over the epoch, not all first
    positions = [k for k, b in enumerate(batches) if len({groups[i] for i in b}) == 1]
    assert positions != list(range(len(pure)))


def test_fraction_zero_is_the_plain_shuffle_and_fraction_one_groups_nearly_all() -> None:
    groups = _groups({"a": 256, "b": 256})
    plain = _epoch(ResumableBatchSampler(512, 32, seed=1))
    assert _epoch(ResumableBatchSampler(512, 32, seed=1, groups=groups, group_fraction=0.0)) == plain
    everything = _epoch(ResumableBatchSampler(512, 32, seed=1, groups=groups, group_fraction=1.0))
    assert all(len({groups[i] for i in b}) == 1 for b in everything)
    assert sorted(i for b in everything for i in b) == list(range(512))


def test_order_is_seeded_per_epoch_and_resumes_mid_epoch() -> None:
    groups = _groups({"a": 300, "b": 200, "c": 140})
    make = lambda: ResumableBatchSampler(640, 32, seed=5, groups=groups, group_fraction=0.6)  # noqa: E731
    first = _epoch(make(), epoch=2)
    assert first == _epoch(make(), epoch=2)
    assert first != _epoch(make(), epoch=3)
    resumed = make()
    resumed.set_epoch(2)
    resumed.set_start(7)
    assert list(resumed) == first[7:]


def test_ranks_and_accumulation_split_a_pure_optimizer_step_into_pure_micro_batches() -> None:
    groups = _groups({"a": 512, "b": 512})
    per_rank = []
    for rank in range(2):
        s = ResumableBatchSampler(
            1024, 16, seed=0, rank=rank, world_size=2, accum_steps=2, groups=groups, group_fraction=0.5
        )
        per_rank.append(_epoch(s))
    steps = len(per_rank[0]) // 2
    pure_steps = 0
    for step in range(steps):
        step_items = [i for r in range(2) for b in per_rank[r][2 * step : 2 * step + 2] for i in b]
        assert len(set(step_items)) == 64
        pure_steps += len({groups[i] for i in step_items}) == 1
    assert pure_steps == 2 * int(512 * 0.5) // 64  # 4 per group
    assert sorted(i for r in per_rank for b in r for i in b) == list(range(1024))


def test_a_small_tail_is_completed_without_repeating_its_own_samples() -> None:
    groups = _groups({"a": 70, "b": 30})  # 100 samples, batch 32: 2 pure 'a'... and a 4-sample tail
    batches = _epoch(ResumableBatchSampler(100, 32, seed=0, groups=groups, group_fraction=1.0))
    assert len(batches) == 4
    assert all(len(set(b)) == 32 for b in batches)
    assert set(i for b in batches for i in b) == set(range(100))


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="group_fraction"):
        ResumableBatchSampler(64, 32, groups=["a"] * 64, group_fraction=1.5)
    with pytest.raises(ValueError, match="3 labels for 64 samples"):
        ResumableBatchSampler(64, 32, groups=["a"] * 3, group_fraction=0.5)
