"""`predict_dataset`: run a task model over a task dataset, batch by batch, into per-sample predictions.

Shared by the fine-tuning job (validation and test of each seed) and the eval kind ``finetune``;
`sonofm.finetune.job` re-exports it.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch
from torch import nn

from sonofm.errors import DataError
from sonofm.inference.precision import autocast
from sonofm.tasks.base import FinetuneTask, collate, concat_predictions
from sonofm.train.batches import to_device


def _loader(ds: torch.utils.data.Dataset, batch_size: int, workers: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        ds, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate
    )


def _autocast(device: torch.device, precision: str) -> Any:
    return autocast(precision, device)


@torch.no_grad()
def predict_dataset(
    model: nn.Module,
    task: FinetuneTask,
    ds: Any,
    *,
    device: torch.device,
    batch_size: int = 32,
    workers: int = 0,
    precision: str = "fp32",
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Run `model` over a task dataset; per-sample predictions and the matching manifest rows."""
    was = model.training
    model.eval()
    chunks = []
    for batch in _loader(ds, batch_size, workers):
        if "image" not in batch:
            continue
        batch = to_device(batch, device)
        with _autocast(device, precision):
            outputs = model(batch["image"])
        chunk = task.predict(outputs, batch)
        chunk["index"] = batch["index"].cpu().numpy()
        chunks.append(chunk)
    model.train(was)
    if not chunks:
        raise DataError(f"{task.name}: no decodable images to evaluate")
    preds = concat_predictions(chunks)
    rows = ds.table.iloc[preds["index"]].reset_index(drop=True)
    return preds, rows
