"""The one training loop every sonofm job uses.

A job plugs in a :class:`TrainStep` (how to run the model on a batch and which loss terms to
compute from the outputs); the loop owns everything else: device and DDP setup, mixed precision,
gradient accumulation, clipping, AdamW + warmup/cosine, checkpoints and exact resume, NaN
detection, validation with early stopping, JSONL/TensorBoard metrics and a progress bar.

Speed
-----
A step reads nothing back to the host: loss terms, the gradient norm and the non-finite check
stay on the device and are materialised only at log steps (and before checkpoints), so a GPU is
never stalled by ``.item()``. A non-finite step is skipped on the device by the fused AdamW kernel
(``found_inf``) and reported at the next check; optimizers without that kernel fall back to a
per-step check. The image tower's attention kernel is picked per precision and sequence length
(:func:`~sonofm.train.precision.choose_attention`); ``train.compile`` wraps the model in
``torch.compile`` and falls back to eager, with a warning, where that is unsupported or fails.

Using it from a job::

    step = ContrastiveStep(ClipLoss())            # or any object with forward(model, batch) / loss(outputs)
    trainer = Trainer(model, step, TrainerConfig(...), run_dir, train_loader, evaluate=val_fn)
    result = trainer.fit(resume="latest" or None)

Data order and exact resume
---------------------------
Map-style datasets are drawn through :class:`~sonofm.train.sampler.ResumableBatchSampler`:
the order is a function of (seed, epoch, rank) and a resumed run starts at the saved batch
without decoding the skipped ones. Streams (``IterableDataset`` with ``__len__``) shard
themselves over ranks; one with ``configure``/``set_start`` (``sonofm.data.shards.ShardDataset``)
follows the same epoch plan and starts at the saved sample position, any other is replayed up
to it. Epochs are padded to whole optimizer steps (``train.tail``, :func:`plan_epoch`).
With the model, optimizer, scheduler, scaler and every rank's RNG restored,
a resumed CPU run is bit-identical to an uninterrupted one (given deterministic augmentation,
which ``sonofm.data`` keys on (seed, epoch, index)).

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
is the micro-batch size; other outputs (e.g. the logit scale, a parameter used directly) keep
their gradient in the last micro-batch only, so they are counted once. Under DDP the first K-1
backward passes run inside ``no_sync`` and the loss gathers the cached features of all ranks,
so negatives span ``batch_size * accum_steps * world_size`` samples.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, IterableDataset

from sonofm.config import TrainerConfig
from sonofm.data.loader import worker_context
from sonofm.errors import DataError, UserError
from sonofm.train import checkpoint as ckpt
from sonofm.train.compile import compile_model
from sonofm.train.distributed import DistInfo, all_reduce_mean, all_reduce_sum, any_rank, init_distributed
from sonofm.train.metrics_log import MetricsLogger, Progress
from sonofm.train.optim import WarmupCosine, build_optimizer, build_scheduler, is_fused
from sonofm.train.precision import autocast, choose_attention, resolve_precision
from sonofm.train.sampler import EpochPlan, ResumableBatchSampler, plan_epoch, report_plan

log = logging.getLogger(__name__)

Batch = Any
Outputs = dict[str, Any]


class TrainingDiverged(UserError):
    """The loss became NaN/inf; the weights were not updated with it."""


@runtime_checkable
class TrainStep(Protocol):
    """What a job plugs into :class:`Trainer`.

    ``forward`` runs the (possibly DDP-wrapped) model on one micro-batch and returns its outputs;
    ``loss`` turns outputs (of one micro-batch, or of the concatenated accumulated batch when
    feature caching is on) into named loss terms, which the trainer sums.
    """

    def forward(self, model: nn.Module, batch: Batch) -> Outputs: ...

    def loss(self, outputs: Outputs) -> dict[str, Tensor]: ...


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` did."""

    step: int
    epoch: int
    stopped_early: bool
    best_metric: float | None
    last_val: dict[str, float] = field(default_factory=dict)
    skipped_samples: int = 0
    checkpoint: Path | None = None
    data: dict[str, Any] = field(default_factory=dict)  # world size, batches, backend, epoch plan


# ---------------------------------------------------------------------------------------------
# small helpers


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) from one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def to_device(obj: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) dict/list/tuple to ``device``."""
    if isinstance(obj, Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def batch_length(batch: Batch) -> int:
    """Rows in a batch: the first dim of its first tensor with at least one dimension."""
    values = batch.values() if isinstance(batch, dict) else batch
    for v in values:
        if isinstance(v, Tensor) and v.ndim >= 1:
            return int(v.shape[0])
    return 0


def materialise(record: dict[str, Any]) -> dict[str, Any]:
    """A step record with its tensors read back as Python floats (one host sync per tensor)."""
    return {k: float(v) if isinstance(v, Tensor) else v for k, v in record.items()}


def skipped_in(batch: Batch) -> int:
    """Samples the collate function dropped because their image failed to decode."""
    if isinstance(batch, dict) and "n_skipped" in batch:
        return int(batch["n_skipped"])
    return 0


def _rng_snapshot(device: torch.device) -> tuple[Tensor, Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _rng_restore(state: tuple[Tensor, Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def enable_grad_checkpointing(model: nn.Module) -> None:
    """Turn on activation checkpointing: the model's own switch or each HF submodule's."""
    if hasattr(model, "set_grad_checkpointing"):
        model.set_grad_checkpointing(True)
        return
    found = False
    for module in model.modules():
        if getattr(module, "supports_gradient_checkpointing", False) and hasattr(
            module, "gradient_checkpointing_enable"
        ):
            module.gradient_checkpointing_enable()
            found = True
    if not found:
        raise UserError(
            f"{type(model).__name__} has no gradient checkpointing switch "
            "(set_grad_checkpointing or a transformers tower); set train.grad_checkpointing=false"
        )


# ---------------------------------------------------------------------------------------------


class Trainer:
    """Run ``step`` over ``train_data`` with the settings in ``config``; write into ``out_dir``.

    ``train_data`` is a ``Dataset`` (with ``collate_fn``) or a ``DataLoader`` whose dataset,
    collate function and worker count are reused: the trainer draws batches through its own
    :class:`ResumableBatchSampler` so data order is part of the checkpoint. ``evaluate(model,
    epoch)`` returns validation metrics (it runs on rank 0 with the unwrapped model in eval
    mode; its result is broadcast). ``extra_state`` is stored in every checkpoint (e.g. the
    resolved job config). ``on_step(trainer, record)`` callbacks see every logged record.
    """

    def __init__(
        self,
        model: nn.Module,
        step: TrainStep,
        config: TrainerConfig,
        out_dir: str | Path,
        train_data: Dataset | DataLoader,
        *,
        collate_fn: Callable[[list[Any]], Batch] | None = None,
        evaluate: Callable[[nn.Module, int], dict[str, float]] | None = None,
        dist_info: DistInfo | None = None,
        extra_state: dict[str, Any] | None = None,
        on_step: Sequence[Callable[[Trainer, dict[str, Any]], None]] = (),
    ) -> None:
        self.config = config
        self.step_fn = step
        self.out_dir = Path(out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.evaluate = evaluate
        self.extra_state = extra_state or {}
        self.on_step = list(on_step)
        self.dist = dist_info or init_distributed(config.device)
        self.device = self.dist.device
        self.precision = resolve_precision(config.precision, self.device)
        if config.precision == "auto":
            log.info("precision auto -> %s on %s", self.precision, self.device)
        self._check_precision()

        if isinstance(train_data, DataLoader):
            self.dataset = train_data.dataset
            self.collate_fn = collate_fn or train_data.collate_fn
            self.workers = train_data.num_workers
        else:
            self.dataset = train_data
            self.collate_fn = collate_fn
            self.workers = config.workers
        # Map-style data go through a resumable sampler; streams (IterableDataset, e.g. WebDataset
        # shards) shard themselves over ranks/workers and are replayed up to the resume point.
        self.streaming = isinstance(self.dataset, IterableDataset)
        self.sampler: ResumableBatchSampler | None = None
        if self.streaming:
            try:
                n = len(self.dataset)  # type: ignore[arg-type]
            except TypeError as err:
                raise UserError(
                    f"{type(self.dataset).__name__} is a stream without __len__; the trainer needs "
                    "the sample count to plan epochs and the LR schedule"
                ) from err
            configure = getattr(self.dataset, "configure", None)
            tail = config.tail if configure is not None else "drop"  # a plain stream cannot pad
            self.plan: EpochPlan = plan_epoch(
                n, config.batch_size, self.dist.world_size, tail, config.accum_steps
            )
            if configure is not None:
                configure(self.plan, rank=self.dist.rank, seed=config.seed)
        else:
            self.sampler = ResumableBatchSampler(
                len(self.dataset),
                config.batch_size,
                shuffle=True,
                seed=config.seed,
                rank=self.dist.rank,
                world_size=self.dist.world_size,
                tail=config.tail,
                accum_steps=config.accum_steps,
            )
            self.plan = self.sampler.plan
        if self.dist.is_main:
            report_plan(self.plan)
        self.steps_per_epoch = self.plan.steps // config.accum_steps
        self.total_steps = config.epochs * self.steps_per_epoch
        if config.max_steps is not None:
            self.total_steps = min(self.total_steps, config.max_steps)

        self.raw_model = model.to(self.device)
        self._choose_attention()
        if config.grad_checkpointing:
            enable_grad_checkpointing(self.raw_model)
        self.optimizer = build_optimizer(
            self.raw_model, config.lr, config.weight_decay, tuple(config.betas), config.eps
        )
        self.scheduler = build_scheduler(
            self.optimizer, min(config.warmup_steps, self.total_steps), self.total_steps, config.min_lr_ratio
        )
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        # Device-side divergence bookkeeping (read back only at log steps and checkpoints).
        self._bad: Tensor | None = None  # 1.0 once a step had a non-finite loss/gradient
        self._bad_step: Tensor | None = None  # the first such step (1-based)
        self._bad_loss: Tensor | None = None  # its loss
        self._skipped_pending = 0  # skipped samples on this rank not yet summed over ranks
        self._compiled = False

        # progress counters (all part of the checkpoint)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0  # micro-batches of the current epoch already consumed
        self.best_metric: float | None = None
        self.bad_validations = 0
        self.skipped_samples = 0
        self.last_val: dict[str, float] = {}
        self.model: nn.Module = self.raw_model

    # -- setup ---------------------------------------------------------------------------------

    def _check_precision(self) -> None:
        p = self.precision
        if p == "fp16" and self.device.type != "cuda":
            raise UserError("precision fp16 needs a CUDA GPU (GradScaler); use --precision bf16 on CPU")

    def _autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.precision, self.device)

    def _choose_attention(self) -> None:
        """Give every transformers image tower the faster attention kernel for this precision."""
        for module in self.raw_model.modules():
            tokens = getattr(module, "tokens", None)
            if isinstance(tokens, int) and callable(getattr(module, "set_attention", None)):
                impl = choose_attention(self.precision, self.device, tokens)
                if module.set_attention(impl):
                    name = type(module).__name__
                    log.debug("%s attention: %s (%s, %d tokens)", name, impl, self.precision, tokens)

    def _wrap_model(self) -> None:
        model: nn.Module = self.raw_model
        if self.dist.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=ids, find_unused_parameters=self.config.find_unused_parameters
            )
        if self.config.compile:
            compiled = compile_model(model, self.device)
            self._compiled = compiled is not model
            model = compiled
        self.model = model

    def _batches(self) -> Iterator[Batch]:
        """This epoch's micro-batches from the current position on (the resume point included)."""
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)
        # A fresh generator per epoch: creating the iterator then draws no numbers from the
        # global RNG, and worker seeds depend only on (seed, epoch, rank).
        gen = torch.Generator()
        gen.manual_seed(self.config.seed * 7919 + self.epoch * 104729 + self.dist.rank)
        common = {
            "collate_fn": self.collate_fn,
            "num_workers": self.workers,
            "pin_memory": self.device.type == "cuda",
            "generator": gen,
            "multiprocessing_context": worker_context(self.config.worker_start, self.workers),
        }
        if self.sampler is None:  # a stream: start at the saved position, or replay up to it
            seekable = hasattr(self.dataset, "set_start")
            if seekable:
                self.dataset.set_start(self.batch_in_epoch)
            loader = DataLoader(self.dataset, batch_size=self.config.batch_size, drop_last=True, **common)
            it = iter(loader)
            for _ in range(0 if seekable else self.batch_in_epoch):
                next(it, None)
            return it
        self.sampler.set_epoch(self.epoch)
        self.sampler.set_start(self.batch_in_epoch)
        return iter(DataLoader(self.dataset, batch_sampler=self.sampler, **common))

    def _next_micro_batches(self, data: Iterator[Batch]) -> list[Batch] | None:
        """The micro-batches of one step, or None when a stream ran dry on any rank."""
        micro = list(itertools.islice(data, self.config.accum_steps))
        short = len(micro) < self.config.accum_steps
        if self.streaming:
            short = any_rank(short, self.device)  # every rank must stop at the same step
        if short:
            if not self.streaming:
                raise RuntimeError("the batch sampler yielded fewer batches than planned")
            log.warning(
                "the data stream ended early (epoch %d, step %d); starting the next epoch",
                self.epoch,
                self.step,
            )
            return None
        return micro

    # -- checkpoint ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        rngs = [ckpt.rng_state()]
        if self.dist.distributed:
            import torch.distributed as dist

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
            import torch.distributed as dist

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

    # -- one optimizer step --------------------------------------------------------------------

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
                    per_sample = isinstance(value, Tensor) and value.ndim >= 1 and value.shape[0] == sizes[k]
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

    def train_step(self, micro: list[Batch]) -> dict[str, Any]:
        """Forward/backward over the micro-batches of one optimizer step, then update.

        Returns the step's record with tensor values (loss terms, ``grad_norm``, scalar outputs
        such as the logit scale); :func:`materialise` turns them into floats. Nothing here reads
        a device value back to the host (except with an optimizer lacking a fused kernel).
        """
        if self._compiled and self.step == 0 and not getattr(self, "_compile_checked", False):
            return self._first_compiled_step(micro)
        self.model.train()
        micro = [to_device(b, self.device) for b in micro]
        for b in micro:
            if batch_length(b) == 0:
                raise DataError(
                    "a whole micro-batch failed to decode (every image unreadable); "
                    "check the dataset's images with `sonofm ingest --check`"
                )
        n_samples = sum(batch_length(b) for b in micro)
        skipped = sum(skipped_in(b) for b in micro)
        self.optimizer.zero_grad(set_to_none=True)
        use_cache = self.config.accum_feature_cache and len(micro) > 1
        values, out = self._cached_accumulation(micro) if use_cache else self._plain_accumulation(micro)
        loss = torch.stack(list(values.values())).sum()
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        params = [p for p in self.raw_model.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params], foreach=True)
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grads_with_norm_(params, self.config.grad_clip, grad_norm, foreach=True)
        self._guard_nonfinite(loss, grad_norm)
        lr = self.optimizer.param_groups[0]["lr"]
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        record: dict[str, Any] = {"lr": lr, "loss": loss, "grad_norm": grad_norm.detach(), **values}
        for key, value in out.items():  # scalar outputs such as the logit scale are worth watching
            if isinstance(value, Tensor) and value.ndim == 0 and key not in record:
                record[key] = value.detach().float()
        record["_samples"] = n_samples
        record["_skipped"] = skipped
        return record

    def _first_compiled_step(self, micro: list[Batch]) -> dict[str, Any]:
        """Run the first step through ``torch.compile``; on a compiler failure continue eagerly."""
        self._compile_checked = True
        rng = _rng_snapshot(self.device)
        try:
            return self.train_step(micro)
        except Exception as err:  # noqa: BLE001 - any compiler/backend failure means: run eagerly
            if isinstance(err, UserError | DataError):
                raise
            why = f"{type(err).__name__}: {err}"
            log.warning("train.compile: torch.compile failed (%s); training without it", why)
            self.model = getattr(self.model, "_orig_mod", self.model)
            self._compiled = False
            _rng_restore(rng, self.device)
            return self.train_step(micro)

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
            import torch.distributed as dist

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

    def _sync_skipped(self) -> None:
        """Add the skipped samples of all ranks since the last call (a collective under DDP)."""
        self.skipped_samples += int(all_reduce_sum(self._skipped_pending, self.device))
        self._skipped_pending = 0

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

    # -- validation ----------------------------------------------------------------------------

    def validate(self) -> dict[str, float]:
        if self.evaluate is None:
            return {}
        metrics: dict[str, float] = {}
        if self.dist.is_main:
            was_training = self.raw_model.training
            self.raw_model.eval()
            with torch.no_grad(), self._autocast():
                metrics = {k: float(v) for k, v in self.evaluate(self.raw_model, self.epoch).items()}
            self.raw_model.train(was_training)
        if self.dist.distributed:
            from sonofm.train.distributed import broadcast_object

            metrics = broadcast_object(metrics)  # type: ignore[assignment]
        return metrics

    def _improved(self, metrics: dict[str, float]) -> bool:
        name = self.config.early_stop_metric
        if name is None:
            return False
        if name not in metrics:
            raise UserError(
                f"early_stop_metric {name!r} is not among the validation metrics {sorted(metrics)}"
            )
        value = metrics[name]
        if self.best_metric is None:
            return True
        return value > self.best_metric if self.config.early_stop_mode == "max" else value < self.best_metric

    def _target_reached(self, metrics: dict[str, float]) -> bool:
        cfg = self.config
        if cfg.early_stop_target is None or cfg.early_stop_metric not in metrics:
            return False
        value = metrics[cfg.early_stop_metric]
        return (
            value >= cfg.early_stop_target if cfg.early_stop_mode == "max" else value <= cfg.early_stop_target
        )

    # -- the loop ------------------------------------------------------------------------------

    def fit(self, resume: str | Path | None = None) -> FitResult:
        """Train to ``epochs``/``max_steps`` (or early stop); return what happened."""
        cfg = self.config
        if resume is None:
            seed_everything(cfg.seed + self.dist.rank)
        else:
            self.resume(resume)
        if self.dist.is_main:
            ckpt.clean_stale_temporaries(self.ckpt_dir)
        self._wrap_model()
        logger = MetricsLogger(
            self.out_dir,
            enabled=self.dist.is_main,
            tensorboard=cfg.tensorboard,
            resume_step=self.step if resume is not None else None,
        )
        progress = Progress(self.total_steps, self.step, enabled=cfg.progress and self.dist.is_main)
        stopped_early = False
        last_path: Path | None = None
        try:
            while self.step < self.total_steps and self.epoch < cfg.epochs and not stopped_early:
                data = self._batches()
                t0 = time.perf_counter()
                window_samples = 0
                ran_dry = False
                while (
                    self.batch_in_epoch // cfg.accum_steps < self.steps_per_epoch
                    and self.step < self.total_steps
                ):
                    micro = self._next_micro_batches(data)
                    if micro is None:
                        ran_dry = True
                        break
                    record = self.train_step(micro)
                    self.step += 1
                    self.batch_in_epoch += cfg.accum_steps
                    self._skipped_pending += record.pop("_skipped")
                    window_samples += record.pop("_samples") * self.dist.world_size
                    if self.step % cfg.log_every == 0 or self.step == 1 or self.step == self.total_steps:
                        self.check_finite()  # the one read-back of device values per log window
                        self._sync_skipped()
                        record = {k: all_reduce_mean(v, self.device) for k, v in materialise(record).items()}
                        dt = time.perf_counter() - t0
                        samples, window_samples, t0 = window_samples, 0, time.perf_counter()
                        record = {
                            "step": self.step,
                            "epoch": self.epoch
                            + self.batch_in_epoch / (self.steps_per_epoch * cfg.accum_steps),
                            **record,
                            "samples_per_s": samples / dt if dt > 0 else float("nan"),
                            "skipped_samples": self.skipped_samples,
                        }
                        logger.log(record)
                        for cb in self.on_step:
                            cb(self, record)
                        progress.update(1, info=f"loss {record.get('loss', float('nan')):.4f}")
                    else:
                        progress.update(1)
                    if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                        last_path = self.save()
                # epoch finished (or max_steps reached mid-epoch)
                epoch_done = ran_dry or self.batch_in_epoch // cfg.accum_steps >= self.steps_per_epoch
                if epoch_done:
                    self.epoch += 1
                    self.batch_in_epoch = 0
                best = False
                if epoch_done and cfg.val_every and self.epoch % cfg.val_every == 0 and self.evaluate:
                    metrics = self.validate()
                    self.last_val = metrics
                    best = self._improved(metrics)
                    if best:
                        self.best_metric = metrics[cfg.early_stop_metric]  # type: ignore[index]
                        self.bad_validations = 0
                    elif cfg.early_stop_metric is not None:
                        self.bad_validations += 1
                    logger.log({"step": self.step, "epoch": self.epoch, **metrics})
                    if self._target_reached(metrics):
                        stopped_early = True
                        log.info(
                            "stop: %s reached its target %s", cfg.early_stop_metric, cfg.early_stop_target
                        )
                    if cfg.patience and self.bad_validations >= cfg.patience:
                        stopped_early = True
                        log.info(
                            "early stop: %s did not improve for %d validations",
                            cfg.early_stop_metric,
                            self.bad_validations,
                        )
                last_path = self.save(best=best)
        finally:
            progress.close()
            logger.close()
        self.check_finite()
        self._sync_skipped()
        return FitResult(
            step=self.step,
            epoch=self.epoch,
            stopped_early=stopped_early,
            best_metric=self.best_metric,
            last_val=self.last_val,
            skipped_samples=self.skipped_samples,
            checkpoint=last_path,
            data=self.data_summary(),
        )

    def data_summary(self) -> dict[str, Any]:
        """How this run split its data: what ``training.json`` records under ``distributed``."""
        import torch.distributed as dist

        cfg = self.config
        return {
            "world_size": self.dist.world_size,
            "backend": dist.get_backend() if dist.is_initialized() else None,
            "per_rank_batch": cfg.batch_size,
            "accum_steps": cfg.accum_steps,
            "global_batch": cfg.batch_size * cfg.accum_steps * self.dist.world_size,
            "steps_per_epoch": self.steps_per_epoch,
            "streaming": self.streaming,
            "epoch_plan": self.plan.as_dict(),
        }
