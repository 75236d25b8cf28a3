"""Leaving the process group: drain every collective first (the gloo teardown deadlock)."""

from __future__ import annotations

import pytest
import torch.distributed as dist

from sonofm.train.distributed import cleanup


def test_cleanup_drains_collectives_before_leaving(monkeypatch: pytest.MonkeyPatch) -> None:
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
    # without the barrier a gloo thread can still be freeing a finished all-reduce when the reducer
    # drops the group: its destructor then joins that thread while holding the GIL
    assert calls == ["barrier", "destroy"]
    assert not dist.is_initialized()
    cleanup()  # no process group (a plain run, or a second call): nothing to do
    assert calls == ["barrier", "destroy"]
