"""DataLoader worker start methods (``train.worker_start``) and picklable augmentations."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from sonofm.config import PretrainConfig, TrainerConfig, resolve_config
from sonofm.data.augment import Sample, default_ultrasound_augment
from sonofm.data.loader import loader_workers, worker_context
from sonofm.losses import ClipLoss
from sonofm.ssl.job import SSLConfig
from sonofm.train import ContrastiveStep, Trainer
from tests.train.standin import PairData, StandInDual, collate


def test_worker_context_choices() -> None:
    assert worker_context("default", 2) is None
    assert worker_context("forkserver", 0) is None  # no workers: nothing to start
    assert worker_context("forkserver", 2).get_start_method() == "forkserver"
    assert worker_context("spawn", 1).get_start_method() == "spawn"
    with pytest.raises(ValueError, match="not available here"):
        worker_context("teleport", 2)


def test_augmentations_pickle_and_replay_identically() -> None:
    """spawn/forkserver workers receive the pipeline by pickle: it must survive, draw for draw."""
    aug = default_ultrasound_augment(1.0)
    clone = pickle.loads(pickle.dumps(aug))
    img = np.random.default_rng(0).random((32, 32), dtype=np.float32)
    mask = (img > 0.5).astype(np.int64)
    pts = np.array([[3.0, 4.0], [20.0, 10.0]])
    for seed in range(5):
        a = aug(Sample(img, mask, pts), np.random.default_rng(seed))
        b = clone(Sample(img, mask, pts), np.random.default_rng(seed))
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.mask, b.mask)
        np.testing.assert_array_equal(a.points, b.points)


def _fit(tmp_path: Path, start: str) -> list[dict]:
    torch.manual_seed(0)
    config = TrainerConfig(
        batch_size=8,
        epochs=2,
        lr=5e-3,
        warmup_steps=1,
        log_every=1,
        progress=False,
        device="cpu",
        workers=1,
        worker_start=start,
    )
    Trainer(
        StandInDual(dropout=0.0),
        ContrastiveStep(ClipLoss()),
        config,
        tmp_path,
        PairData(32),
        collate_fn=collate,
    ).fit()
    return [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]


def test_forkserver_workers_train_exactly_like_forked_ones(tmp_path: Path) -> None:
    forked = _fit(tmp_path / "fork", "fork")
    served = _fit(tmp_path / "forkserver", "forkserver")
    losses = [r["loss"] for r in forked if "loss" in r]
    assert len(losses) == 8
    assert losses == [r["loss"] for r in served if "loss" in r]


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch):
    """Pretend the process may use ``cpus`` cores and torch runs ``threads`` intra-op threads."""

    def set_machine(cpus: int, threads: int, local_world: int | None = None) -> None:
        monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
        monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
        if local_world is None:
            monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
        else:
            monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_world))

    return set_machine


def test_auto_workers_leave_the_cpu_step_its_cores(machine) -> None:
    machine(cpus=2, threads=2)
    assert loader_workers("auto", "cpu") == 0  # every core runs the step: load in-process
    assert loader_workers(3, "cpu") == 3  # a number is taken as given
    machine(cpus=16, threads=8)
    assert loader_workers("auto", "cpu") == 4  # idle cores load, at most 4
    machine(cpus=8, threads=6)
    assert loader_workers("auto", torch.device("cpu")) == 2
    machine(cpus=4, threads=1, local_world=4)  # torchrun on CPU: 4 processes x 1 thread
    assert loader_workers("auto", "cpu") == 0


def test_auto_workers_on_a_gpu_keep_a_core_per_process(machine) -> None:
    machine(cpus=16, threads=16)
    assert loader_workers("auto", "cuda") == 8
    machine(cpus=16, threads=16, local_world=8)
    assert loader_workers("auto", "cuda") == 1  # 2 cores per process: one trains, one loads
    machine(cpus=2, threads=2, local_world=4)
    assert loader_workers("auto", "cuda") == 1  # never none on a GPU


def test_trainer_and_presets_resolve_auto(machine, tmp_path: Path) -> None:
    machine(cpus=2, threads=2)
    config = TrainerConfig(batch_size=8, epochs=1, progress=False, device="cpu", workers="auto")
    step = ContrastiveStep(ClipLoss())
    trainer = Trainer(StandInDual(), step, config, tmp_path, PairData(16), collate_fn=collate)
    assert trainer.workers == 0
    for cls, kind in ((PretrainConfig, "train"), (SSLConfig, "ssl")):
        assert resolve_config(cls, preset="tiny", kind=kind).train.workers == "auto", kind
    assert resolve_config(PretrainConfig, preset="tiny", overrides=["train.workers=2"]).train.workers == 2
    with pytest.raises(ValidationError):
        TrainerConfig(workers="many")
