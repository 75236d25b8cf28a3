"""torchrun worker for test_ddp_trainer.py: the stand-in model trained by 2 gloo processes.

usage: torchrun --nproc_per_node 2 ddp_train_worker.py OUT [STOP_AT_STEP|resume]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from sonofm.config import TrainerConfig
from sonofm.losses import ClipLoss
from sonofm.train import ContrastiveStep, Trainer
from sonofm.train.distributed import cleanup, init_distributed
from tests.train.standin import PairData, StandInDual, collate


def make_trainer(out: Path, batch_size: int, *, stop_at: int | None = None) -> Trainer:
    torch.manual_seed(5)
    cfg = TrainerConfig(
        batch_size=batch_size, accum_steps=2, epochs=2, lr=2e-3, warmup_steps=2, checkpoint_every=2,
        log_every=1, seed=11, progress=False, device="cpu",
    )  # fmt: skip

    def crash(trainer: Trainer, record: dict) -> None:
        if stop_at is not None and trainer.step == stop_at:
            os._exit(0)  # both ranks vanish mid-run, after the checkpoint of the step before

    return Trainer(
        StandInDual(dropout=0.0), ContrastiveStep(ClipLoss()), cfg, out, PairData(34, seed=2, broken=(5,)),
        collate_fn=collate, evaluate=lambda model, epoch: {"val/epoch": float(epoch)}, on_step=[crash],
    )  # fmt: skip


def main() -> None:
    out = Path(sys.argv[1])
    info = init_distributed("cpu")
    arg = sys.argv[2] if len(sys.argv) > 2 else None
    trainer = make_trainer(out, batch_size=4, stop_at=int(arg) if arg and arg.isdigit() else None)
    result = trainer.fit(resume="latest" if arg == "resume" else None)
    if info.is_main:
        state = {**trainer.raw_model.state_dict(), "skipped": torch.tensor(result.skipped_samples)}
        torch.save(state, out / "final.pt")
    cleanup()


if __name__ == "__main__":
    main()
