"""DataLoader worker start methods (``train.worker_start``) and picklable augmentations."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from sonofm.config import TrainerConfig
from sonofm.data.augment import Sample, default_ultrasound_augment
from sonofm.data.loader import worker_context
from sonofm.losses import ClipLoss
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
