"""The self-supervised image pretraining job behind ``sonofm ssl``.

config -> image tower (a model preset's image section, a config file, or a sonofm model dir)
-> :class:`~sonofm.models.ssl.SSLModel` (SimMIM + hierarchical anatomy heads) -> images of one
split (no text needed; labels from the manifest's region/organ/view where known) -> the shared
:class:`~sonofm.train.trainer.Trainer` (AMP, DDP, exact resume, JSONL metrics, progress) -> a
model directory whose ``.visual`` tower initialises ``pretrain``/``finetune`` through
``image.pretrained=RUN/model``.

Validation each epoch: masked-reconstruction loss with a fixed mask per image, and the
accuracy of each anatomy level on unmasked images.

Run layout (``out``): ``config.yaml``, ``metrics.jsonl``, ``checkpoints/`` and ``model/``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import Tensor, nn

from sonofm.config import CachedImagesConfig, TrainerConfig
from sonofm.data.loader import build_dataset, loader_workers
from sonofm.data.loader import data_path as resolve_data
from sonofm.errors import DataError, UserError
from sonofm.losses.mim import IGNORE_INDEX
from sonofm.models.config import ImageTowerConfig
from sonofm.models.factory import _MONAI_SWIN_KEYS, load_spec
from sonofm.models.image_towers import sonofm_model_dir
from sonofm.models.io import read_model_config
from sonofm.models.ssl import LEVELS, SSLModel, SSLModelConfig, anatomy_labels
from sonofm.train.distributed import barrier, init_distributed
from sonofm.train.finish import save_run_model
from sonofm.train.rundir import open_run
from sonofm.train.trainer import FitResult, Trainer

log = logging.getLogger(__name__)


class SSLDataConfig(CachedImagesConfig):
    augment: float = Field(0.3, ge=0, le=1)


class SSLWeights(BaseModel):
    """Weights of the loss terms; a level with weight 0 gets no head at all."""

    model_config = ConfigDict(extra="forbid")

    mim: float = Field(1.0, ge=0)
    region: float = Field(0.5, ge=0)
    organ: float = Field(0.5, ge=0)
    view: float = Field(0.5, ge=0)


class SSLConfig(BaseModel):
    """``sonofm ssl``: masked image modelling + hierarchical anatomy classification of an image tower."""

    model_config = ConfigDict(extra="forbid")

    # The tower to pretrain: a model preset name (its `image` section), a model YAML/JSON file, or a
    # sonofm model directory (its tower's architecture and weights are the starting point).
    model: str = "tiny"
    image: dict[str, Any] = Field(default_factory=dict, description="overrides of the tower section")
    mask_ratio: float = Field(0.6, gt=0, lt=1)
    mask_patch: int | None = Field(None, ge=1, description="mask cell side in px (default 32 or the patch)")
    norm_pix: bool = True
    recon_loss: Literal["l1", "l2"] = "l1"
    decoder: Literal["linear", "mlp"] = "linear"
    decoder_hidden: int = Field(256, ge=1)
    hierarchy: Literal["conditional", "flat"] = "conditional"
    cls_input: Literal["masked", "clean"] = "masked"
    weights: SSLWeights = Field(default_factory=SSLWeights)
    data: SSLDataConfig = Field(default_factory=SSLDataConfig)
    train: TrainerConfig = Field(default_factory=TrainerConfig)


@dataclass
class SSLResult:
    """Where an SSL run put its outputs, and how it ended."""

    run_dir: Path
    model_dir: Path
    metrics: Path
    fit: FitResult


# ---------------------------------------------------------------------------------------------
# config -> model


def _check_tower_keys(image: ImageTowerConfig) -> None:
    """Reject misspelt architecture keys (transformers configs would silently keep them)."""
    if image.arch is not None or image.pretrained:
        return
    if image.kind == "monai_swin":
        known = set(_MONAI_SWIN_KEYS)
    else:
        from transformers import CONFIG_MAPPING  # lazy: heavy (seconds); only a transformers tower needs it

        known = set(CONFIG_MAPPING[image.kind]().to_dict())
    unknown = sorted(set(image.extra) - known)
    if unknown:
        raise UserError(f"unknown image.{unknown[0]} for image.kind={image.kind!r} (unknown keys: {unknown})")


def tower_section(model: str) -> dict[str, Any]:
    """The image-tower section named by ``model`` (preset, config file or sonofm model dir)."""
    model_dir = sonofm_model_dir(model)
    if model_dir is not None:
        image = (read_model_config(model_dir).get("config") or {}).get("image")
        if not isinstance(image, dict):
            raise UserError(
                f"{model_dir}/config.json has no config.image section (no image tower to start from)"
            )
        image = {k: v for k, v in image.items() if k != "arch"}
        image["pretrained"] = str(model_dir)
        return image
    image = load_spec(model).get("image")
    if not isinstance(image, dict):
        raise UserError(f"model {model!r} has no `image` section")
    return image


def build_model_config(config: SSLConfig) -> SSLModelConfig:
    """The SSL model's config: tower section + ``image.*`` overrides + masking/heads settings."""
    image_data = {**tower_section(config.model), **config.image}
    try:
        image = ImageTowerConfig.model_validate(image_data)
        _check_tower_keys(image)
        return SSLModelConfig(
            image=image,
            mask_ratio=config.mask_ratio,
            mask_patch=config.mask_patch,
            norm_pix=config.norm_pix,
            recon_loss=config.recon_loss,
            decoder=config.decoder,
            decoder_hidden=config.decoder_hidden,
            hierarchy=config.hierarchy,
            cls_input=config.cls_input,
            levels=[lv for lv in LEVELS if getattr(config.weights, lv) > 0],
        )
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()[:5]
        )
        raise UserError(f"invalid SSL model settings: {problems}") from e


# ---------------------------------------------------------------------------------------------
# data


def _no_text(row: dict[str, Any], rng: np.random.Generator) -> str:
    """SSL needs no captions (module-level so worker processes can pickle it)."""
    return ""


class SSLCollate:
    """Stack images and turn region/organ/view into class indices (IGNORE_INDEX when unknown)."""

    def __init__(self, regions: list[str], organs: list[str], views: list[str]) -> None:
        self.vocab = {"regions": list(regions), "organs": list(organs), "views": list(views)}

    def __call__(self, batch: list[dict[str, Any] | None]) -> dict[str, Any]:
        items = [b for b in batch if b is not None]
        out: dict[str, Any] = {"n_skipped": len(batch) - len(items)}
        if not items:
            return out
        out["image"] = torch.stack([b["image"] for b in items])
        labels = anatomy_labels(
            [b.get("region") for b in items],
            [b.get("organ") for b in items],
            [b.get("view") for b in items],
            self.vocab,
        )
        out.update({f"label_{k}": v for k, v in labels.items()})
        out["id"] = [b.get("id") for b in items]
        return out


def _dataset(config: SSLConfig, split: str, image_size: int, augment: float, workers: int = 0) -> Any:
    return build_dataset(
        config.data.path,
        split,
        image_size=image_size,
        augment=augment,
        text=_no_text,
        seed=config.train.seed,
        with_masks=False,
        image_cache_mb=config.data.image_cache_mb,  # every epoch reads every image again
        workers=workers,  # the trainer's loader processes share the cache
    )


def _label_coverage(dataset: Any, model: SSLModel) -> dict[str, int]:
    table = dataset.table
    n = len(table)
    col = {c: table[c].tolist() if c in table.columns else [None] * n for c in ("region", "organ", "view")}
    labels = model.labels_for(col["region"], col["organ"], col["view"])
    return {lv: int((labels[lv] != IGNORE_INDEX).sum()) for lv in LEVELS}


# ---------------------------------------------------------------------------------------------
# step and validation


class SSLStep:
    """Trainer step: masked forward pass, then the weighted MIM + anatomy terms."""

    def __init__(self, model: SSLModel, weights: dict[str, float]) -> None:
        self.model = model  # unwrapped: its loss_terms knows the label sets and loss settings
        self.weights = weights

    def forward(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
        out = model(batch["image"])
        out["labels"] = {lv: batch[f"label_{lv}"] for lv in LEVELS}
        return out

    def loss(self, outputs: dict[str, Any]) -> dict[str, Tensor]:
        return self.model.loss_terms(outputs, outputs["labels"], self.weights)


@torch.no_grad()
def evaluate_ssl(model: SSLModel, loader: Any, device: torch.device, seed: int = 0) -> dict[str, float]:
    """Masked-reconstruction loss (same masks every call) and per-level accuracy on clean images."""
    gen = torch.Generator().manual_seed(seed)
    mim_sum, n_img = 0.0, 0
    correct = dict.fromkeys(model.config.levels, 0)
    total = dict.fromkeys(model.config.levels, 0)
    for batch in loader:
        if "image" not in batch:
            continue
        images = batch["image"].to(device)
        b = images.shape[0]
        out = model(images, model.random_mask(b, generator=gen))
        terms = model.loss_terms(out, {lv: batch[f"label_{lv}"] for lv in LEVELS}, {"mim": 1.0})
        mim_sum += float(terms["mim_loss"]) * b
        n_img += b
        logits = model.classify(images)
        for lv in model.config.levels:
            y = batch[f"label_{lv}"].to(device)
            valid = y != IGNORE_INDEX
            correct[lv] += int((logits[lv].argmax(-1)[valid] == y[valid]).sum())
            total[lv] += int(valid.sum())
    if n_img == 0:
        raise DataError("the validation split yielded no decodable images")
    metrics = {"val/mim_loss": mim_sum / n_img}
    for lv in model.config.levels:
        if total[lv]:
            metrics[f"val/{lv}_acc"] = correct[lv] / total[lv]
    return metrics


# ---------------------------------------------------------------------------------------------
# the job


def ssl_pretrain(
    config: SSLConfig, out: str | Path, *, resume: str | None = None, overwrite: bool = False
) -> SSLResult:
    """Pretrain an image tower as ``config`` says; write the run (and ``out/model``) into ``out``."""
    data_path = resolve_data(config.data.path)  # a dataset dir, manifest or shard directory
    if config.weights.mim == 0 and not any(getattr(config.weights, lv) > 0 for lv in LEVELS):
        raise UserError("every loss weight is 0 (weights.mim, weights.region, ...): nothing to train")
    out = Path(out)
    info = init_distributed(config.train.device)
    run = open_run(out, job="ssl", config=config, resume=resume, overwrite=overwrite)
    resume = run.resume  # the same config re-run continues from its latest checkpoint
    run.start(config, info.is_main)

    torch.manual_seed(config.train.seed)  # same initial weights on every rank
    model = SSLModel(build_model_config(config))
    size = model.visual.image_size
    workers = loader_workers(config.train.workers, info.device)  # what the Trainer will start
    train_ds = _dataset(config, config.data.train_split, size, config.data.augment, workers)
    coverage = _label_coverage(train_ds, model)
    log.info("SSL on %d images; labelled rows per level: %s", len(train_ds), coverage)
    for lv in model.config.levels:
        if coverage[lv] == 0:
            log.warning("no training row has a known %s: the %s head gets no signal", lv, lv)
    cfg = model.config
    collate = SSLCollate(cfg.regions, cfg.organs, cfg.views)

    evaluate = None
    if config.data.val_split and config.train.val_every:
        try:
            val_ds = _dataset(config, config.data.val_split, size, 0.0)
        except DataError as err:
            log.warning("no validation: %s", err)
        else:
            val_loader = torch.utils.data.DataLoader(
                val_ds, batch_size=config.data.val_batch_size, shuffle=False, collate_fn=collate
            )

            def evaluate(m: nn.Module, epoch: int) -> dict[str, float]:
                return evaluate_ssl(m, val_loader, info.device, seed=config.train.seed)  # type: ignore[arg-type]

    weights = config.weights.model_dump()
    # Every SSL term is a per-sample mean, so plain gradient accumulation is exact; the contrastive
    # feature cache (two forward passes per micro-batch) would only cost time.
    train_cfg = config.train.model_copy(update={"accum_feature_cache": False})
    trainer = Trainer(
        model,
        SSLStep(model, weights),
        train_cfg,
        out,
        train_ds,
        collate_fn=collate,
        evaluate=evaluate,
        dist_info=info,
        extra_state={"config": config.model_dump(mode="json")},
    )
    fit = trainer.fit(resume=resume)

    model_dir = out / "model"
    if info.is_main:
        extra = {"labelled_rows": coverage}
        save_run_model(model, out, job="ssl", config=config, fit=fit, data_path=data_path, extra=extra)
    barrier()
    return SSLResult(run_dir=out, model_dir=model_dir, metrics=out / "metrics.jsonl", fit=fit)
