"""NaN/inf bookkeeping for the training loop (a :class:`Trainer` mixin).

A non-finite step is flagged on the device (no host sync per step), kept out of the weights by
the fused optimizer's ``found_inf`` where possible, and reported as :class:`TrainingDiverged` at
the next log step or checkpoint, with the first bad step and its loss.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor

from sonofm.errors import UserError
from sonofm.train import checkpoint as ckpt
from sonofm.train.optim import is_fused


class TrainingDiverged(UserError):
    """The loss became NaN/inf; the weights were not updated with it."""


class DivergenceGuard:
    """Device-side divergence flags of a :class:`Trainer` (``_bad``, ``_bad_step``, ``_bad_loss``)."""

    def _guard_nonfinite(self, loss: Tensor, grad_norm: Tensor) -> None:
        """Keep a non-finite step out of the weights without a host sync where possible.

        The flag is identical on every rank (gradients are already all-reduced; the loss flag is
        max-reduced), so every rank skips the same steps. With the fused AdamW kernel the flag
        goes to the optimizer as ``found_inf`` (the kernel then leaves weights, moments and step
        count untouched) and is read back at the next log step or checkpoint; with a GradScaler
        (fp16) infinite gradients are the scaler's business and only the loss counts; any other
        optimizer is checked on the host now.
        """
        bad = ~torch.isfinite(loss.detach())
        if self.scaler is None:
            bad = bad | ~torch.isfinite(grad_norm.detach())
        bad = bad.float()
        if self.dist.distributed:
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        if self._bad is None:
            self._bad = torch.zeros((), device=self.device)
            self._bad_step = torch.zeros((), device=self.device)
            self._bad_loss = torch.zeros((), device=self.device)
        first = (self._bad == 0) & (bad > 0)
        self._bad_step = torch.where(first, torch.full_like(self._bad_step, self.step + 1), self._bad_step)
        self._bad_loss = torch.where(first, loss.detach().float(), self._bad_loss)
        self._bad = torch.maximum(self._bad, bad)
        if self.scaler is None and is_fused(self.optimizer):
            self.optimizer.found_inf = bad  # type: ignore[attr-defined]
        else:
            if self.scaler is None and hasattr(self.optimizer, "found_inf"):
                del self.optimizer.found_inf
            self.check_finite()

    def check_finite(self) -> None:
        """Raise :class:`TrainingDiverged` if any step so far had a non-finite loss or gradient."""
        if self._bad is None or not bool(self._bad):
            return
        self.optimizer.zero_grad(set_to_none=True)
        self._raise_diverged(float(self._bad_loss), int(self._bad_step))

    def _raise_diverged(self, loss_value: float, step: int) -> None:
        latest = self.ckpt_dir / ckpt.LATEST
        where = (
            f"the last good checkpoint is {latest}; fix the cause, then continue with --resume latest"
            if latest.is_file()
            else "no checkpoint was written before this step"
        )
        what = (
            f"loss became {loss_value}"
            if not math.isfinite(loss_value)
            else f"the gradient became non-finite (loss {loss_value:.4g})"
        )
        raise TrainingDiverged(
            f"{what} at step {step} (epoch {self.epoch}); the weights were not updated with it and "
            f"training stopped. Lower the learning rate (now {self.config.lr:g}), keep "
            f"grad_clip on or use --precision fp32. {where}"
        )
