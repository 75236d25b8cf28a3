"""Supervised auxiliary heads on the image embedding: the manifest's labels as a training signal.

Simulated (and many curated) datasets label every image with its region, echo view and lesion
attributes. EchoCare trains a hierarchical anatomy classifier beside its self-supervised branch
(docs/methods.md, section 3); here the same labels act on the contrastive embedding, so the image
tower learns what separates regions, views and attributes even while the text side is still
vague. Single-label targets use cross-entropy (rows without a label are ignored); "attributes" is
multi-label over ``dimension:tag`` with binary cross-entropy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

ATTRIBUTES = "attributes"
# Which attribute dimensions the multi-label head learns: the lesion descriptors (the diagnosis,
# organ and body system are single-label targets of their own when wanted).
DESCRIPTOR_DIMS = ("shape", "margin", "echogenicity", "internal", "posterior", "vascularity")
DEFAULT_TARGETS = ("region", "view", ATTRIBUTES)


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value)) and value != ""


def head_classes(table: Any, targets: Sequence[str] = DEFAULT_TARGETS) -> dict[str, list[str]]:
    """Class names per target from a manifest table; targets with fewer than 2 classes are left out."""
    out: dict[str, list[str]] = {}
    for target in targets:
        if target == ATTRIBUTES:
            if ATTRIBUTES not in table.columns:
                continue
            tags = sorted(
                {
                    f"{d}:{t}"
                    for a in table[ATTRIBUTES]
                    if isinstance(a, Mapping)
                    for d in DESCRIPTOR_DIMS
                    for t in (a.get(d) if a.get(d) is not None else ())
                }
            )
        elif target in table.columns:
            tags = sorted({str(v) for v in table[target] if _present(v)})
        else:
            continue
        if len(tags) >= 2:
            out[target] = tags
    return out


def head_labels(batch: Mapping[str, Any], heads: Mapping[str, Sequence[str]]) -> dict[str, Tensor]:
    """``label/<target>`` tensors for a collated batch: class index (-1 = unlabelled) or multi-hot."""
    out: dict[str, Tensor] = {}
    for target, classes in heads.items():
        if target == ATTRIBUTES:
            index = {c: i for i, c in enumerate(classes)}
            rows = batch.get(ATTRIBUTES) or []
            y = torch.zeros(len(rows), len(classes))
            for r, attrs in enumerate(rows):
                for d in DESCRIPTOR_DIMS:
                    for tag in (attrs or {}).get(d) or ():
                        j = index.get(f"{d}:{tag}")
                        if j is not None:
                            y[r, j] = 1.0
            out[f"label/{target}"] = y
        else:
            index = {c: i for i, c in enumerate(classes)}
            values = batch.get(target) or []
            out[f"label/{target}"] = torch.tensor(
                [index.get(str(v), -1) if _present(v) else -1 for v in values], dtype=torch.long
            )
    return out


class SupervisedHeadsLoss(nn.Module):
    """Mean over targets of the head losses; returns ``{"supervised_loss": value}``."""

    def __init__(self, targets: Sequence[str]) -> None:
        super().__init__()
        self.targets = tuple(targets)

    def forward(self, outputs: Mapping[str, Any]) -> dict[str, Tensor]:
        losses = []
        for target in self.targets:
            logits, labels = outputs.get(f"head/{target}"), outputs.get(f"label/{target}")
            if logits is None or labels is None:
                continue
            labels = labels.to(logits.device)
            if target == ATTRIBUTES:
                losses.append(F.binary_cross_entropy_with_logits(logits.float(), labels.float()))
            else:  # mean over labelled rows; 0 when none is labelled (no host sync to check)
                total = F.cross_entropy(logits.float(), labels, ignore_index=-1, reduction="sum")
                losses.append(total / labels.ge(0).sum().clamp(min=1))
        if not losses:
            raise ValueError(
                "the supervised loss term found no head outputs with labels; the model needs heads "
                "(DualEncoderConfig.heads) for the manifest's targets"
            )
        return {"supervised_loss": torch.stack(losses).mean()}
