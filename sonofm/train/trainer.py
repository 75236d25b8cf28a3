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
(:func:`~sonofm.inference.precision.choose_attention`); ``train.compile`` wraps the model in
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

Gradient accumulation (plain, or exact for contrastive losses with ``accum_feature_cache``) is
:mod:`sonofm.train.accumulation`; NaN/inf bookkeeping is :mod:`sonofm.train.divergence`; what a
checkpoint holds of the trainer is :mod:`sonofm.train.trainer_state`.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, IterableDataset

from sonofm.config import TrainerConfig
from sonofm.data.loader import loader_workers, worker_context
from sonofm.errors import DataError, UserError
from sonofm.inference.precision import autocast, choose_attention, resolve_precision
from sonofm.train import checkpoint as ckpt
from sonofm.train.accumulation import GradientAccumulation
from sonofm.train.batches import batch_length, materialise, skipped_in, to_device
from sonofm.train.compile import compile_model
from sonofm.train.distributed import (
    DistInfo,
    all_reduce_mean,
    all_reduce_sum,
    any_rank,
    broadcast_object,
    init_distributed,
)
from sonofm.train.divergence import DivergenceGuard
from sonofm.train.divergence import TrainingDiverged as TrainingDiverged  # re-exported
from sonofm.train.metrics_log import MetricsLogger, Progress
from sonofm.train.optim import build_optimizer, build_scheduler
from sonofm.train.sampler import EpochPlan, ResumableBatchSampler, plan_epoch, report_plan
from sonofm.train.seeding import _rng_restore, _rng_snapshot, seed_everything
from sonofm.train.trainer_state import TrainerState

log = logging.getLogger(__name__)

Batch = Any
Outputs = dict[str, Any]


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


class Trainer(TrainerState, GradientAccumulation, DivergenceGuard):
    """Run ``step`` over ``train_data`` with the settings in ``config``; write into ``out_dir``.

    ``train_data`` is a ``Dataset`` (with ``collate_fn``) or a ``DataLoader`` whose dataset,
    collate function and worker count are reused: the trainer draws batches through its own
    :class:`ResumableBatchSampler` so data order is part of the checkpoint. ``evaluate(model,
    epoch)`` returns validation metrics (it runs on rank 0 with the unwrapped model in eval
    mode; its result is broadcast). ``extra_state`` is stored in every checkpoint (e.g. the
    resolved job config). ``on_step(trainer, record)`` callbacks see every logged record.
    ``batch_groups`` (a label per sample) with ``group_fraction`` makes that share of the batches
    single-group (:class:`ResumableBatchSampler`); streams refuse it.
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
        batch_groups: Sequence[Hashable] | None = None,
        group_fraction: float = 0.0,
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
            self.workers = loader_workers(config.workers, self.device)
        # Map-style data go through a resumable sampler; streams (IterableDataset, e.g. WebDataset
        # shards) shard themselves over ranks/workers and are replayed up to the resume point.
        self.streaming = isinstance(self.dataset, IterableDataset)
        self.sampler: ResumableBatchSampler | None = None
        if self.streaming:
            if batch_groups is not None and group_fraction > 0:
                raise UserError(
                    "single-group batches (data.group_by) need a map-style dataset; a stream "
                    "(WebDataset shards) is read in its own order"
                )
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
                groups=batch_groups,
                group_fraction=group_fraction,
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
            self.raw_model,
            config.lr,
            config.weight_decay,
            tuple(config.betas),
            config.eps,
            lr_scales=config.lr_scales,
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

    def _release_ddp(self) -> None:
        """Drop the DDP wrapper when training ends, while the process group is still registered.

        PyTorch frees a DDP reducer with the GIL held; if the reducer holds the last reference to
        a gloo process group (the group was destroyed first, as `cleanup` does), the group's
        destructor joins its worker threads while one of them waits for the GIL to free a finished
        collective's tensors: a deadlock (seen in ~1 run in 10 of the two-process trainer test). Freed
        here, the reducer drops a reference the registry still shares, and the group is freed later
        through its Python handle, whose destructor releases the GIL.
        """
        if self.dist.distributed and self.model is not self.raw_model:
            self.model = self.raw_model
            gc.collect()  # the wrapper sits in reference cycles: free the reducer now, not at exit

    def _collate_modules(self) -> tuple[str, ...]:
        """The collate's own sonofm module (pretrain's objective collate), for the forkserver to preload."""
        module = type(self.collate_fn).__module__
        return (module,) if module.startswith("sonofm.") else ()

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
            "multiprocessing_context": worker_context(
                self.config.worker_start, self.workers, preload=self._collate_modules()
            ),
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

    # -- one optimizer step --------------------------------------------------------------------

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

    def _sync_skipped(self) -> None:
        """Add the skipped samples of all ranks since the last call (a collective under DDP)."""
        self.skipped_samples += int(all_reduce_sum(self._skipped_pending, self.device))
        self._skipped_pending = 0

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
            self._release_ddp()
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
