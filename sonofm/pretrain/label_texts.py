"""The label texts of the ``label_text`` objective and each batch's targets over them.

Every label a group can take (the taxonomy's organs, echo views and the tags of each lesion
descriptor dimension) gets one text (:func:`sonofm.reports.captions.label_caption`); the loss
(:mod:`sonofm.losses.label_text`) contrasts each image with the texts of its group. The vocabulary
comes from the taxonomy, not from the dataset, so two datasets train against the same label set
and a label the data never shows is still a negative of its group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sonofm import taxonomy as tx
from sonofm.losses.label_text import GROUPS
from sonofm.reports.captions import label_caption


def _group_values(group: str) -> list[str]:
    if group == "organ":
        return [o.id for o in tx.ORGANS]
    if group == "view":
        return list(tx.VIEWS)
    return [t.id for t in tx.tags(group)]


def _present(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


@dataclass(frozen=True)
class LabelTexts:
    """Label texts in group order; ``spans[k]`` is group k's (start, stop) column range."""

    groups: tuple[str, ...]
    labels: tuple[tuple[str, str], ...]  # (group, value) per column
    texts: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]

    @classmethod
    def from_taxonomy(cls, groups: Sequence[str] = GROUPS) -> LabelTexts:
        groups = tuple(dict.fromkeys(groups))
        bad = [g for g in groups if g not in GROUPS]
        if bad or not groups:
            raise ValueError(f"label_text groups {bad or list(groups)}: expected some of {list(GROUPS)}")
        labels: list[tuple[str, str]] = []
        spans: list[tuple[int, int]] = []
        for group in groups:
            values = _group_values(group)
            if len(values) < 2:
                raise ValueError(f"label_text group {group!r} has {len(values)} label(s); a contrast needs 2")
            spans.append((len(labels), len(labels) + len(values)))
            labels.extend((group, v) for v in values)
        texts = tuple(label_caption(g, v) for g, v in labels)
        return cls(groups, tuple(labels), texts, tuple(spans))

    @cached_property
    def _column(self) -> dict[tuple[str, str], int]:
        return {label: j for j, label in enumerate(self.labels)}

    def targets(self, batch: Mapping[str, Any]) -> Tensor:
        """(B, T) multi-hot labels of a collated batch (its ``organ``, ``view``, ``attributes``)."""
        n = len(batch["image"])
        column = self._column
        y = np.zeros((n, len(self.labels)), dtype=np.float32)
        organs = batch.get("organ") or [None] * n
        views = batch.get("view") or [None] * n
        attributes = batch.get("attributes") or [None] * n
        for i in range(n):
            for group, value in (("organ", organs[i]), ("view", views[i])):
                if group in self.groups and _present(value):
                    j = column.get((group, value))
                    if j is not None:
                        y[i, j] = 1.0
            attrs = attributes[i] if isinstance(attributes[i], Mapping) else {}
            for group in self.groups:
                if group in ("organ", "view"):
                    continue
                for tag in attrs.get(group) if attrs.get(group) is not None else ():
                    j = column.get((group, str(tag)))
                    if j is not None:
                        y[i, j] = 1.0
        return torch.from_numpy(y)
