"""What a checkpoint holds of a :class:`Trainer`, and restoring it (a mixin).

The file format and atomic writing are :mod:`sonofm.train.checkpoint`'s; this part decides the
contents (model, optimizer, scheduler, scaler, every rank's RNG, progress counters) so that a
resumed run continues bit-identically, and makes a restored schedule follow this run's config.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch.distributed as dist

from sonofm.train import checkpoint as ckpt
from sonofm.train.optim import WarmupCosine
from sonofm.train.seeding import seed_everything

log = logging.getLogger("sonofm.train.trainer")  # the loop's logger, as before the split


class TrainerState:
    """``state_dict``/``load_state_dict``, ``save`` and ``resume`` of a :class:`Trainer`."""

    def state_dict(self) -> dict[str, Any]:
        rngs = [ckpt.rng_state()]
        if self.dist.distributed:
            gathered: list[Any] = [None] * self.dist.world_size
            dist.all_gather_object(gathered, rngs[0])
            rngs = gathered
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            # global sample position in this epoch's (padded) order, for people and tools
            "sample_in_epoch": self.batch_in_epoch * self.config.batch_size * self.dist.world_size,
            "epoch_plan": self.plan.as_dict(),
            "world_size": self.dist.world_size,
            "model": self.raw_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rngs,
            "trainer": {
                "best_metric": self.best_metric,
                "bad_validations": self.bad_validations,
                "skipped_samples": self.skipped_samples,
                "last_val": dict(self.last_val),
            },
            "extra": self.extra_state,
        }

    def save(self, *, best: bool = False) -> Path | None:
        """Checkpoint now (every rank takes part in gathering RNG states; rank 0 writes)."""
        self.check_finite()  # never checkpoint past a diverged step
        self._sync_skipped()
        state = self.state_dict()
        path = None
        if self.dist.is_main:
            path = ckpt.save_checkpoint(state, self.ckpt_dir, best=best)
            log.info("checkpoint step %d -> %s%s", self.step, path, " (best)" if best else "")
        if self.dist.distributed:
            dist.barrier()
        return path

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.raw_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:  # the kernel is this run's choice, not the checkpoint's
            for key in ("fused", "foreach"):
                if key in self.optimizer.defaults:
                    group[key] = self.optimizer.defaults[key]
        self.scheduler.load_state_dict(state["scheduler"])
        self._apply_schedule_config()
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        t = state["trainer"]
        self.best_metric = t["best_metric"]
        self.bad_validations = int(t["bad_validations"])
        self.skipped_samples = int(t["skipped_samples"])
        self.last_val = dict(t.get("last_val") or {})
        rngs = state["rng"]
        if len(rngs) == self.dist.world_size:
            ckpt.set_rng_state(rngs[self.dist.rank])
        else:
            log.warning(
                "checkpoint was written by %d processes, this run has %d: RNG streams are reseeded, "
                "so the continuation is not bit-identical",
                len(rngs),
                self.dist.world_size,
            )
            seed_everything(self.config.seed + 1000 * self.step + self.dist.rank)

    def _apply_schedule_config(self) -> None:
        """Make a restored schedule follow *this* run's config (e.g. more epochs, another lr).

        ``LambdaLR.load_state_dict`` restores the saved schedule's totals and base lrs; a resumed
        run with unchanged settings gets identical values (so resumes stay bit-identical), while
        one with ``--epochs`` raised continues on the longer cosine instead of sitting at its end.
        """
        fresh = WarmupCosine(
            min(self.config.warmup_steps, self.total_steps), self.total_steps, self.config.min_lr_ratio
        )
        self.scheduler.lr_lambdas[0].__dict__.update(fresh.__dict__)
        self.scheduler.base_lrs = [self.config.lr for _ in self.optimizer.param_groups]
        step = self.scheduler.last_epoch
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs, strict=True):
            group["lr"] = base * self.scheduler.lr_lambdas[0](step)
        self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def resume(self, resume: str | Path) -> None:
        path = ckpt.resolve_checkpoint(resume, self.out_dir)
        self.load_state_dict(ckpt.load_checkpoint(path, map_location=self.device))
        log.info("resumed from %s at step %d (epoch %d)", path, self.step, self.epoch)
