"""ReplayLoader: the second pass gives the first pass's batches without reading again; a pass
that was cut short or a split over budget is never replayed."""

from __future__ import annotations

import torch

from sonofm.data.replay import ReplayLoader, batch_nbytes


class CountingLoader:
    def __init__(self, n: int = 3) -> None:
        self.n, self.passes, self.items = n, 0, 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        self.passes += 1
        for i in range(self.n):
            self.items += 1
            yield {"image": torch.full((2, 1, 4, 4), float(self.passes * 10 + i)), "text": ["a", "b"]}


def test_second_pass_replays_the_first_without_reading() -> None:
    loader = CountingLoader()
    replay = ReplayLoader(loader)
    first = [b["image"][0, 0, 0, 0].item() for b in replay]
    assert first == [10.0, 11.0, 12.0] and replay.replaying
    again = [b["image"][0, 0, 0, 0].item() for b in replay]
    assert again == first and loader.passes == 1


def test_a_cut_pass_is_not_kept() -> None:
    loader = CountingLoader()
    replay = ReplayLoader(loader)
    for _ in zip(range(2), replay, strict=False):
        pass
    assert not replay.replaying
    assert [b["image"][0, 0, 0, 0].item() for b in replay] == [20.0, 21.0, 22.0]  # a fresh full pass
    assert replay.replaying


def test_over_budget_streams_every_pass() -> None:
    loader = CountingLoader()
    one = batch_nbytes(next(iter(CountingLoader())))
    assert one == 2 * 16 * 4  # the float32 image; strings count nothing
    replay = ReplayLoader(loader, max_bytes=2 * one)
    assert len(list(replay)) == 3 and not replay.replaying
    assert len(list(replay)) == 3 and loader.passes == 2
