"""Gradient accumulation over the micro-batches of one optimizer step (a :class:`Trainer` mixin).

Two strategies: the mean of the micro-batch losses (right for per-sample losses) and feature
caching (exact for contrastive losses, whose negatives span the whole batch). They live here, not
in the loop, because the caching argument is long and self-contained.

Gradient accumulation with feature caching
-------------------------------------------
A contrastive loss over a batch is not a sum of per-sample terms: every sample is a negative
for every other. Summing the losses of K micro-batches therefore gives a different (weaker)
objective than one batch of K times the size. With ``accum_feature_cache`` the loop computes
the big-batch loss exactly, with the memory of one micro-batch (the GradCache/open_clip
``accum_freq`` idea):

1. For each micro-batch k, save the RNG state and run the forward pass *without* grad; keep the
   outputs (features) ``F_k``.
2. For each micro-batch k: restore its RNG state (so dropout masks match pass 1), run the forward
   pass *with* grad to get ``F_k'`` (equal in value to ``F_k``), build the full-batch outputs by
   concatenating ``F_1 .. F_k' .. F_K`` (only slot k carries grad), compute the loss of the
   whole accumulated batch and backpropagate it.

The gradient reaching the parameters in step 2 is ``dL/dF_k * dF_k/dtheta``; summed over k this
is exactly ``dL/dtheta`` of the big batch. Per-batch outputs are the tensors whose first dimension
is the micro-batch size (unless the step names them in ``shared_outputs``: tensors that are the
same for every sample, such as label-text embeddings, whose row count could equal a micro-batch);
other outputs (e.g. the logit scale, a parameter used directly) keep their gradient in the last
micro-batch only, so they are counted once. Under DDP the first K-1
backward passes run inside ``no_sync`` and the loss gathers the cached features of all ranks,
so negatives span ``batch_size * accum_steps * world_size`` samples.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor

from sonofm.train.batches import batch_length
from sonofm.train.seeding import _rng_restore, _rng_snapshot

Batch = Any
Outputs = dict[str, Any]


class GradientAccumulation:
    """Forward, loss and backward of one step's micro-batches; mixed into :class:`Trainer`.

    Uses the trainer's ``model``, ``step_fn``, ``scaler``, ``dist``, ``device`` and ``_autocast``.
    """

    def _backward(self, loss: Tensor) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def _sync_context(self, last: bool) -> contextlib.AbstractContextManager:
        if self.dist.distributed and not last and hasattr(self.model, "no_sync"):
            return self.model.no_sync()
        return contextlib.nullcontext()

    def _forward(self, batch: Batch) -> Outputs:
        with self._autocast():
            return self.step_fn.forward(self.model, batch)

    def _loss(self, outputs: Outputs) -> tuple[Tensor, dict[str, Tensor]]:
        terms = self.step_fn.loss(outputs)
        if not terms:
            raise ValueError(f"{type(self.step_fn).__name__}.loss returned no loss terms")
        total = sum(t.float() for t in terms.values())
        return total, terms

    def _plain_accumulation(self, micro: list[Batch]) -> tuple[dict[str, Tensor], Outputs]:
        """Mean of the micro-batch losses (right for losses that are per-sample averages)."""
        k_total = len(micro)
        sums: dict[str, Tensor] = {}
        last_out: Outputs = {}
        for k, batch in enumerate(micro):
            with self._sync_context(k == k_total - 1):
                out = self._forward(batch)
                total, terms = self._loss(out)
                self._backward(total / k_total)
            for name, value in terms.items():
                v = value.detach().float() / k_total
                sums[name] = sums[name] + v if name in sums else v
            last_out = out
        return sums, last_out

    def _cached_accumulation(self, micro: list[Batch]) -> tuple[dict[str, Tensor], Outputs]:
        """The whole accumulated batch as one loss (see the module docstring)."""
        k_total = len(micro)
        sizes = [batch_length(b) for b in micro]
        shared = set(getattr(self.step_fn, "shared_outputs", ()))
        rng_states = []
        cached: list[Outputs] = []
        with torch.no_grad():
            for batch in micro:
                rng_states.append(_rng_snapshot(self.device))
                out = self._forward(batch)
                cached.append({k: v.detach() if isinstance(v, Tensor) else v for k, v in out.items()})
        values: dict[str, Tensor] = {}
        last_out: Outputs = {}
        for k, batch in enumerate(micro):
            _rng_restore(rng_states[k], self.device)
            last = k == k_total - 1
            with self._sync_context(last):
                out = self._forward(batch)
                full: Outputs = {}
                for key, value in out.items():
                    per_sample = (
                        key not in shared
                        and isinstance(value, Tensor)
                        and value.ndim >= 1
                        and value.shape[0] == sizes[k]
                    )
                    if per_sample and all(
                        isinstance(c.get(key), Tensor) and c[key].shape[0] == n
                        for c, n in zip(cached, sizes, strict=True)
                    ):
                        full[key] = torch.cat([value if j == k else cached[j][key] for j in range(k_total)])
                    elif isinstance(value, Tensor) and not last:
                        full[key] = value.detach()  # e.g. the logit scale: its gradient counts once
                    else:
                        full[key] = value
                total, terms = self._loss(full)
                self._backward(total)
            if k == 0:
                values = {name: v.detach().float() for name, v in terms.items()}
            last_out = out
        return values, last_out
