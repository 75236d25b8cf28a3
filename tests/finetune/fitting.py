"""Fitting and predicting with a tiny task model in the fine-tuning tests (one loop, not four)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd
import torch

from sonofm.finetune.tasks import concat_predictions


def batch_loss(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    """The sum of the task's loss terms on one batch."""
    return sum(model.task.loss(model(batch["image"]), batch).values())


def eval_loss(model: Any, batch: dict[str, Any]) -> float:
    """`batch_loss` in eval mode, without gradients."""
    model.eval()
    with torch.no_grad():
        return float(batch_loss(model, batch))


def fit(model: Any, batches: Iterable[dict[str, Any]], epochs: int, lr: float) -> None:
    """`epochs` passes of AdamW over `batches` (a DataLoader, or [one fixed batch] to overfit)."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(epochs):
        for batch in batches:
            loss = batch_loss(model, batch)
            opt.zero_grad()
            loss.backward()
            opt.step()


def predict(model: Any, loader: Iterable[dict[str, Any]], table: pd.DataFrame) -> tuple[dict, pd.DataFrame]:
    """(predictions of every batch, the table rows they are of, in prediction order)."""
    model.eval()
    with torch.no_grad():
        chunks = [model.task.predict(model(b["image"]), b) | {"index": b["index"].numpy()} for b in loader]
    preds = concat_predictions(chunks)
    return preds, table.iloc[preds["index"]].reset_index(drop=True)
