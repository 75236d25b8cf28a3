"""The last step every training job shares: pick the weights, write the model directory.

A job's run dir ends with `model/` (config.json, model.safetensors, tokenizer files and a
training.json recording the job, its resolved config, the data card and how training ended), so
every trainer's output loads the same way with `sonofm.load_model`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel
from torch import nn

from sonofm.data.card import read_card
from sonofm.errors import UserError
from sonofm.models import save_model
from sonofm.train.checkpoint import BEST, load_checkpoint
from sonofm.train.trainer import FitResult


def data_card(path: Path) -> dict[str, Any] | None:
    """dataset.json of the training data, or None (a hand-written manifest has no card)."""
    try:
        return read_card(path)
    except UserError:
        return None


def save_run_model(
    model: nn.Module,
    out: Path,
    *,
    job: str,
    config: BaseModel,
    fit: FitResult,
    data_path: Path,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Load the best checkpoint when early stopping tracked one, then write `out/model` (main rank only)."""
    best = out / "checkpoints" / BEST
    source = "final"
    metric = getattr(getattr(config, "train", None), "early_stop_metric", None)
    if metric and best.is_file():
        model.load_state_dict(load_checkpoint(best)["model"])
        source = f"best {metric} = {fit.best_metric}"
    training = {
        "job": job,
        "config": config.model_dump(mode="json"),
        "data_card": data_card(data_path),
        **(extra or {}),
        "weights": source,
        "steps": fit.step,
        "epochs": fit.epoch,
        "stopped_early": fit.stopped_early,
        "val": fit.last_val,
        "skipped_samples": fit.skipped_samples,
        # world size, backend, per-rank and global batch, and what padding did to each epoch
        "distributed": fit.data,
    }
    return save_model(model, out / "model", training=training)
