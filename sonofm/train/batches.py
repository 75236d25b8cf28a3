"""What the training loop needs to know about a batch: where it goes, how many rows it has,
how many samples its collate function dropped, and its step record read back as floats.

Kept apart from the loop so that jobs (finetune, pretrain, the VLM) can move batches to a device
without importing the trainer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

Batch = Any


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
