"""Subprocess for test_resume.py: train the stand-in model, optionally slowly, or tear a write.

usage: resume_worker.py OUT run|resume [SLOW_AFTER_STEP]
       resume_worker.py OUT torn
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import torch

from sonofm.config import TrainerConfig
from sonofm.losses import ClipLoss
from sonofm.train import ContrastiveStep, Trainer, checkpoint
from tests.train.standin import PairData, StandInDual, collate

TOTAL_STEPS = 15  # 40 pairs, batch 4 x accum 2 -> 5 steps per epoch, 3 epochs


def make_trainer(out: Path, slow_after: int) -> Trainer:
    torch.manual_seed(123)
    cfg = TrainerConfig(
        batch_size=4,
        accum_steps=2,
        epochs=3,
        lr=3e-3,
        warmup_steps=3,
        checkpoint_every=1,
        log_every=1,
        seed=7,
        progress=False,
        device="cpu",
    )

    def slow(trainer: Trainer, record: dict) -> None:
        if trainer.step >= slow_after:
            time.sleep(0.4)  # give the parent time to SIGKILL us between checkpoints

    return Trainer(
        StandInDual(dropout=0.2),
        ContrastiveStep(ClipLoss()),
        cfg,
        out,
        PairData(40, seed=1),
        collate_fn=collate,
        on_step=[slow],
    )


def torn_write(out: Path) -> None:
    checkpoint.save_checkpoint({"step": 1, "w": torch.arange(1000)}, out / "checkpoints")
    real_save = torch.save

    def dying_save(obj, fh, *a, **k):
        real_save(obj, fh, *a, **k)
        fh.flush()
        fh.truncate(fh.tell() // 2)  # half the bytes are on disk ...
        os.kill(os.getpid(), signal.SIGKILL)  # ... when the process dies

    torch.save = dying_save
    checkpoint.save_checkpoint({"step": 2, "w": torch.arange(1000) * 2}, out / "checkpoints")


def main() -> None:
    out, mode = Path(sys.argv[1]), sys.argv[2]
    if mode == "torn":
        torn_write(out)
        return
    slow_after = int(sys.argv[3]) if len(sys.argv) > 3 else 10**9
    trainer = make_trainer(out, slow_after)
    trainer.fit(resume="latest" if mode == "resume" else None)
    torch.save(trainer.raw_model.state_dict(), out / "final.pt")


if __name__ == "__main__":
    main()
