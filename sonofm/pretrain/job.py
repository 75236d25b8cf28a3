"""The contrastive pretraining job behind ``sonofm pretrain``.

config -> dual encoder (``sonofm.models.build_model``) -> loaders (``sonofm.data.build_loader``)
-> :class:`~sonofm.train.trainer.Trainer` with a CLIP or SigLIP loss -> a model directory.
Validation each epoch is image<->text retrieval (R@1/5/10) on the validation split.

Run layout (``out``): ``config.yaml`` (resolved config), ``metrics.jsonl``, ``checkpoints/``
(latest + best) and ``model/`` (a model directory loadable by ``sonofm.load_model``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sonofm.config import PretrainConfig
from sonofm.data import loader as data_loader
from sonofm.data.loader import manifest_rows
from sonofm.data.replay import ReplayLoader
from sonofm.data.stats import image_mean_std
from sonofm.errors import DataError, UserError
from sonofm.inference.precision import autocast
from sonofm.losses import build_contrastive_loss
from sonofm.losses.compose import is_plain, parse_loss_spec
from sonofm.losses.supervised import head_classes
from sonofm.models import build_model
from sonofm.models.factory import resolve_config as resolve_model_config
from sonofm.models.text_towers import cached_text_towers, warm_text_caches
from sonofm.pretrain.objective import build_objective
from sonofm.reports.captions import CaptionSampler
from sonofm.train.distributed import barrier, init_distributed
from sonofm.train.finish import save_run_model
from sonofm.train.rundir import open_run
from sonofm.train.steps import ContrastiveStep
from sonofm.train.trainer import FitResult, Trainer, to_device

log = logging.getLogger(__name__)

RECALL_KS = (1, 5, 10)


@dataclass
class PretrainResult:
    """Where a pretraining run put its outputs, and how it ended."""

    run_dir: Path
    model_dir: Path
    metrics: Path
    fit: FitResult


def retrieval_recall(
    image_features: Tensor, text_features: Tensor, ks: tuple[int, ...] = RECALL_KS, prefix: str = "val/"
) -> dict[str, float]:
    """Recall@k of paired retrieval both ways; pair i is (image i, text i).

    The rank of the true partner is the number of candidates scoring strictly higher, so ties
    (e.g. identical reports) count in the model's favour, as in CLIP_benchmark.
    """
    sims = image_features.float() @ text_features.float().T  # (N, N)
    diag = sims.diagonal()
    i2t_rank = (sims > diag[:, None]).sum(1)  # per image: texts above its own
    t2i_rank = (sims > diag[None, :]).sum(0)  # per text: images above its own
    out: dict[str, float] = {}
    for k in ks:
        out[f"{prefix}i2t_r{k}"] = float((i2t_rank < k).float().mean())
        out[f"{prefix}t2i_r{k}"] = float((t2i_rank < k).float().mean())
    out[f"{prefix}r_mean"] = sum(v for key, v in out.items() if "_r" in key) / (2 * len(ks))
    if 1 in ks:
        out[f"{prefix}r1"] = (out[f"{prefix}i2t_r1"] + out[f"{prefix}t2i_r1"]) / 2
    return out


@torch.no_grad()
def embed_pairs(model: nn.Module, loader: Any, device: torch.device) -> tuple[Tensor, Tensor]:
    """L2-normalised image and text embeddings of every pair a loader yields."""
    images, texts = [], []
    for batch in loader:
        if "image" not in batch:
            continue  # every image of this batch failed to decode
        batch = to_device(batch, device)
        images.append(model.encode_image(batch["image"]).float().cpu())
        texts.append(model.encode_text(batch["input_ids"], batch["attention_mask"]).float().cpu())
    if not images:
        raise DataError("the validation split yielded no decodable pairs")
    return torch.cat(images), torch.cat(texts)


def _check_text(dataset: Any, column: str, where: str) -> None:
    """A dataset without text cannot train a contrastive model: say so before any compute."""
    table = getattr(dataset, "table", None)
    if column == "caption":  # captions come from the structured study, else from the parsed report
        has = [c for c in ("structured", "report") if table is not None and c in table.columns]
        if not has:
            raise DataError(
                f"{where}: data.text=caption needs a 'structured' or 'report' column in the manifest"
            )
        column = "report" if "report" in has else "structured"
    if table is None or column not in table.columns:
        raise DataError(f"{where}: the manifest has no {column!r} column, so there is no text to train on")
    text = table[column].astype("string").fillna("").str.strip()
    empty = int((text == "").sum())
    if empty == len(text):
        raise DataError(
            f"{where}: every {column!r} entry of the split is empty, so there is no text to train on "
            "(simulate with reports, or ingest a manifest with a report column)"
        )
    if empty:
        log.warning("%s: %d of %d rows have an empty %r (empty captions)", where, empty, len(text), column)


def uses_siglip(loss: Any) -> bool:
    """Whether the objective has a sigmoid (SigLIP) term, which needs the model's logit bias."""
    name = loss.name.strip().lower()
    if is_plain(name):
        return name == "siglip"
    return "siglip" in parse_loss_spec(name, semantic_lambda=loss.semantic_lambda).names


def _build_model(config: PretrainConfig) -> nn.Module:
    overrides: dict[str, Any] = {}
    if uses_siglip(config.loss):
        overrides["logit_bias"] = True  # SigLIP learns a bias next to the scale (alone or in a combination)
    if config.data.normalize == "data":
        overrides.update(_data_normalisation(config))
    if _uses_term(config.loss, "supervised"):
        overrides["heads"] = _head_classes(config)
    return build_model(config.model, overrides or None)


def _uses_term(loss: Any, term: str) -> bool:
    if is_plain(loss.name):
        return False
    return term in parse_loss_spec(loss.name, semantic_lambda=loss.semantic_lambda).names


def _head_classes(config: PretrainConfig) -> dict[str, list[str]]:
    """Supervised head classes from the whole manifest (the class set must not depend on the split)."""
    heads = head_classes(manifest_rows(config.data.path), config.loss.supervised_targets)
    if not heads:
        raise DataError(
            f"{config.data.path}: loss term 'supervised' needs labels, but none of "
            f"{list(config.loss.supervised_targets)} has >= 2 classes in the manifest"
        )
    return heads


def _data_normalisation(config: PretrainConfig) -> dict[str, Any]:
    """image.mean/std overrides measured on the training split (stored in the model's config.json)."""
    image = resolve_model_config(config.model).image
    size = config.data.image_size or image.image_size
    mean, std = image_mean_std(
        config.data.path, config.data.train_split, image_size=size, seed=config.train.seed
    )
    return {"image.mean": [round(mean, 4)] * image.in_chans, "image.std": [round(std, 4)] * image.in_chans}


def _training_text(config: PretrainConfig) -> Any:
    """The train split's text: the configured field, or a caption sampler (data.caption_sampling)."""
    if not config.data.caption_sampling:
        return config.data.text
    if config.data.text != "caption":
        raise UserError(
            f"data.caption_sampling={config.data.caption_sampling} needs data.text=caption "
            f"(got {config.data.text!r}): it samples single-finding captions of the structured study"
        )
    return CaptionSampler(config.data.caption_sampling)


def _batch_groups(dataset: Any, config: PretrainConfig, where: str) -> list[Any] | None:
    """The training rows' ``data.group_by`` labels (None when batches are not grouped)."""
    column = config.data.group_by
    if not column or not config.data.group_fraction:
        return None
    table = getattr(dataset, "table", None)
    if table is None:
        raise UserError(
            f"data.group_by={column!r}: {where} is a stream; group batches from a dataset directory"
        )
    if column not in table.columns:
        raise UserError(
            f"data.group_by={column!r}: {where} has no such manifest column "
            f"(expected one of {sorted(map(str, table.columns))})"
        )
    values = table[column]
    if values.isna().all():
        raise UserError(f"data.group_by={column!r}: no training row of {where} has a value in that column")
    return [str(v) for v in values.tolist()]  # missing values form one group of their own


def _warm_text_cache(trainer: Trainer, tokenize: Any, datasets: list[Any], collate_fn: Any) -> None:
    """Encode the run's fixed texts (captions, caption hard negatives) once, before step 1, when
    the text tower is frozen and cached: sorted by length in large batches instead of as each
    step's misses (the ultrasound-aware demo stage spent about half its time there)."""
    if not cached_text_towers(trainer.raw_model):
        return  # a learning text tower: listing captions and negatives would be wasted work
    texts: list[str] = []
    for dataset in datasets:
        fixed = getattr(dataset, "fixed_texts", None)
        texts += (fixed() or []) if fixed is not None else []
    fixed_negatives = getattr(collate_fn, "fixed_texts", None)
    if fixed_negatives is not None:
        texts += fixed_negatives()
    if not texts:
        return
    t0 = time.perf_counter()
    with autocast(trainer.precision, trainer.device):
        n = warm_text_caches(trainer.raw_model, texts, tokenize)
    if n:
        log.info(
            "text features of %d texts encoded in %.1f s (frozen text tower)", n, time.perf_counter() - t0
        )


def pretrain(
    config: PretrainConfig, out: str | Path, *, resume: str | None = None, overwrite: bool = False
) -> PretrainResult:
    """Train a dual encoder as ``config`` says; write the run into ``out``.

    Works the same in one process and under ``torchrun`` (each rank draws its own shard of every
    batch; the contrastive loss gathers features across ranks).
    """
    data_path = data_loader.data_path(config.data.path)  # a dataset dir, manifest or shard directory
    out = Path(out)
    info = init_distributed(config.train.device)
    run = open_run(out, job="pretrain", config=config, resume=resume, overwrite=overwrite)
    resume = run.resume  # the same config re-run continues from its latest checkpoint
    run.start(config, info.is_main)

    torch.manual_seed(config.train.seed)  # same initial weights on every rank
    model = _build_model(config)
    image_size = config.data.image_size or int(model.config.image.image_size)
    tokenizer = model.get_tokenizer()
    workers = data_loader.loader_workers(config.train.workers, info.device)
    train_loader = data_loader.build_loader(
        data_path,
        config.data.train_split,
        config.train.batch_size,
        image_size=image_size,
        tokenizer=tokenizer,
        augment=config.data.augment,
        workers=workers,
        seed=config.train.seed,
        text=_training_text(config),
        worker_start=config.train.worker_start,
        # contrastive objectives never look at masks; decoding them was ~20% of the loader's time
        with_masks=False,
        # every epoch reads every image: decode each once per run (about half the loader's CPU)
        image_cache_mb=config.data.image_cache_mb,
    )
    _check_text(train_loader.dataset, config.data.text, str(data_path))

    evaluate = None
    val_dataset = None
    if config.data.val_split and config.train.val_every:
        try:
            val_loader = data_loader.build_loader(
                data_path,
                config.data.val_split,
                config.data.val_batch_size,
                image_size=image_size,
                tokenizer=tokenizer,
                shuffle=False,
                workers=workers,
                seed=config.train.seed,
                text=config.data.text,
                worker_start=config.train.worker_start,
                with_masks=False,
            )
        except DataError as err:
            log.warning("no validation: %s", err)
        else:
            val_dataset = val_loader.dataset
            # no augmentation, fixed order and texts: every validation reads the same batches
            val_batches = ReplayLoader(val_loader)

            def evaluate(m: nn.Module, epoch: int) -> dict[str, float]:
                img, txt = embed_pairs(m, val_batches, info.device)
                return retrieval_recall(img, txt)

    collate_fn = None
    if is_plain(config.loss.name):
        loss = build_contrastive_loss(
            config.loss.name, gather_with_grad=config.loss.gather_with_grad, local_loss=config.loss.local_loss
        )
        step: Any = ContrastiveStep(loss)
    else:  # usclip / echo / weighted combinations (sonofm.pretrain.objective)
        objective = build_objective(
            config.loss,
            model,
            train_loader.dataset,
            tokenizer,
            seed=config.train.seed,
            where=str(data_path),
            text=config.data.text,
        )
        model, step, collate_fn = objective.model, objective.step, objective.collate_fn
    trainer = Trainer(
        model,
        step,
        config.train,
        out,
        train_loader,
        collate_fn=collate_fn,
        evaluate=evaluate,
        dist_info=info,
        extra_state={"config": config.model_dump(mode="json")},
        batch_groups=_batch_groups(train_loader.dataset, config, str(data_path)),
        group_fraction=config.data.group_fraction,
    )
    _warm_text_cache(trainer, tokenizer, [train_loader.dataset, val_dataset], collate_fn)
    fit = trainer.fit(resume=resume)

    model_dir = out / "model"
    if info.is_main:
        save_run_model(model, out, job="pretrain", config=config, fit=fit, data_path=data_path)
    barrier()
    return PretrainResult(run_dir=out, model_dir=model_dir, metrics=out / "metrics.jsonl", fit=fit)
