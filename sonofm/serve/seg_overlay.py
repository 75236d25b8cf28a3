"""Segmentation in the analysis: logits -> label map, label names, and the coloured overlay."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from PIL import Image

from sonofm.errors import UserError
from sonofm.serve.upload import _fit
from sonofm.taxonomy import MASK_LABELS

log = logging.getLogger(__name__)


# label colours of the segmentation overlay (MASK_LABELS ids; 0 = background is transparent)
OVERLAY_COLOURS = {
    1: (255, 64, 64),
    2: (64, 160, 255),
    3: (255, 200, 0),
    4: (0, 200, 120),
    5: (200, 80, 255),
    6: (255, 128, 0),
    7: (0, 220, 220),
    8: (255, 0, 160),
    9: (120, 255, 60),
    10: (255, 255, 255),
}


# ---------------------------------------------------------------- segmentation
def _seg_logits(out: Any) -> torch.Tensor:
    """The (B, C, H, W) logits of a segmentation model's output (tensor or dict of them)."""
    if isinstance(out, dict):
        for key in ("logits", "mask", "masks", "seg"):
            if isinstance(out.get(key), torch.Tensor):
                return out[key]
        out = next((v for v in out.values() if isinstance(v, torch.Tensor) and v.ndim == 4), None)
    if not isinstance(out, torch.Tensor) or out.ndim != 4:
        raise UserError("the segmentation model must return (B, C, H, W) logits (or a dict holding them)")
    return out


def seg_label_ids(seg: Any, n_channels: int) -> list[int]:
    """MASK_LABELS id of each output channel: [0, *labels] from the segment task's `labels` option
    (a `TaskModel` records it in `config.task_options`), else the channel index itself."""
    task = getattr(seg, "task", None)
    labels = getattr(task, "labels", None)
    if labels is None:
        opts = getattr(getattr(seg, "config", None), "task_options", None)
        labels = opts.get("labels") if isinstance(opts, dict) else None
    if isinstance(labels, list | tuple) and len(labels) + 1 == n_channels:
        return [0, *[int(v) for v in labels]]
    if n_channels == 1:
        return [0, 1]  # one sigmoid channel: lesion
    return list(range(n_channels))


def seg_label_names(seg: Any, ids: list[int]) -> list[str]:
    """Names of the label ids: the model's own `label_names` when it has them, else MASK_LABELS."""
    names = getattr(seg, "label_names", None)
    if isinstance(names, list | tuple) and len(names) == len(ids):
        return [str(n) for n in names]
    return [MASK_LABELS.get(i, f"class {i}") for i in ids]


def seg_labels_from_logits(logits: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) logits -> uint8 (B, H, W) label maps (one channel: sigmoid > 0.5)."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).to(torch.uint8).cpu().numpy()
    return logits.argmax(1).to(torch.uint8).cpu().numpy()


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB uint8: `labels` (any size) blended in colour over grayscale `image` at preview size."""
    base = _fit(image)
    h, w = base.shape
    lab = np.asarray(Image.fromarray(labels).resize((w, h), Image.Resampling.NEAREST))
    rgb = np.repeat(base[..., None], 3, axis=2).astype(np.float32)
    for lid in np.unique(lab):
        if lid == 0:
            continue
        col = np.array(OVERLAY_COLOURS.get(int(lid), (255, 255, 0)), np.float32)
        m = lab == lid
        rgb[m] = (1 - alpha) * rgb[m] + alpha * col
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
