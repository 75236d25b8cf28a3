"""Leaving the process group: every rank meets at a barrier, then the group is destroyed."""

from __future__ import annotations

import pytest
import torch.distributed as dist

from sonofm.train.distributed import cleanup


def test_cleanup_meets_at_a_barrier_before_leaving(monkeypatch: pytest.MonkeyPatch) -> None:
    dist.init_process_group("gloo", rank=0, world_size=1, store=dist.HashStore())
    calls: list[str] = []
    barrier, destroy = dist.barrier, dist.destroy_process_group

    def spy(name, fn):
        def call(*args, **kwargs):
            calls.append(name)
            return fn(*args, **kwargs)

        return call

    monkeypatch.setattr(dist, "barrier", spy("barrier", barrier))
    monkeypatch.setattr(dist, "destroy_process_group", spy("destroy", destroy))
    try:
        cleanup()
    finally:
        if dist.is_initialized():
            destroy()
    # a rank that destroyed its group while another still waits on a collective would leave that
    # one to time out
    assert calls == ["barrier", "destroy"]
    assert not dist.is_initialized()
    cleanup()  # no process group (a plain run, or a second call): nothing to do
    assert calls == ["barrier", "destroy"]
