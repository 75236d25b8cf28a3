"""The findings prompt of the report generator: image -> predicted findings -> words in the prompt.

Why: a small decoder given 16 image tokens learns the report's *language* long before it learns
to read the image; measured on held-out patients, the generator named a normal organ where the
image had a lesion and wrote "thyroid" findings under a "breast" impression (clinical F1 0.29
while nearest-neighbour retrieval through the same tower reached 0.37). The image tower itself
knows far more (a linear probe on its features finds the organ at 0.95). Classification-guided
generation (PromptMRG, Jin et al., AAAI 2024: "diagnosis-driven prompts") closes that gap: a
classifier on the image features predicts the findings, and its answer is written into the
prompt as text the pretrained LM can copy, so the report states what the image side sees.

Pieces:

- `FindingsConfig` (``VLMConfig.findings``): the label groups, the loss weight and the decision
  threshold of the multi-label groups.
- `FindingsVocab`: one column per label of each group, from the taxonomy (not the dataset, so a
  label the training data never shows is still a class). Single-label groups (organ, view,
  diagnosis) are softmax classes; ``view`` has a ``none`` class for images that have no echo view
  (a breast image is labelled "no view", not "unknown"). Multi-label groups (the lesion descriptor
  dimensions and the echo findings) are independent sigmoids.
- labels: what an image is known to show, ``{"organ", "view", "diagnosis": str | None,
  "attributes": {dim: [tags]}, "echo": [present echo findings] | None}``; conversation records
  built from a manifest carry them in ``meta["labels"]`` (`sonofm.vlm.conversations.labels_of_row`).
- `FindingsVocab.targets`: those labels as a (K,) target and a (G,) "group is labelled" mask; a
  group the row says nothing about trains nothing.
- `FindingsHead`: LayerNorm + Linear on the mean of the tower's final patch grid (the features
  the projector also reads), and its loss (cross-entropy per single-label group, binary
  cross-entropy per multi-label group, each over its labelled images).
- `FindingsVocab.decide` + `hint_text`: predicted probabilities -> labels -> the prompt line
  ("Image findings: breast; mass; oval, hypoechoic, solid."). Training renders the ground-truth
  labels with the same `hint_text`, so the prompt at inference is a token-exact sibling of the
  training prompts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor, nn

from sonofm import taxonomy as tx
from sonofm.models.vlm_prompt import HINT_PREFIX

DESCRIPTOR_GROUPS = ("shape", "margin", "echogenicity", "internal", "posterior", "vascularity")
SINGLE_GROUPS = ("organ", "view", "diagnosis")
ALL_GROUPS = (*SINGLE_GROUPS, *DESCRIPTOR_GROUPS, "echo")
NO_VIEW = "none"


class FindingsConfig(BaseModel):
    """``VLMConfig.findings``: predict these label groups from the image and prompt with them."""

    model_config = ConfigDict(extra="forbid")

    groups: list[str] = Field(default_factory=lambda: list(ALL_GROUPS))
    weight: float = Field(1.0, ge=0, description="findings loss weight beside the LM loss")
    threshold: float = Field(
        0.5, gt=0, lt=1, description="multi-label groups: a tag is stated from this probability"
    )

    @field_validator("groups")
    @classmethod
    def _known(cls, groups: list[str]) -> list[str]:
        bad = [g for g in groups if g not in ALL_GROUPS]
        if bad or not groups:
            raise ValueError(f"findings groups {bad or groups}: expected some of {list(ALL_GROUPS)}")
        return list(dict.fromkeys(groups))


def _values(group: str) -> list[str]:
    if group == "organ":
        return [o.id for o in tx.ORGANS]
    if group == "view":
        return [*tx.VIEWS, NO_VIEW]
    if group == "echo":
        return list(tx.ECHO_FINDINGS)
    return [t.id for t in tx.tags(group)]


def _phrase(group: str, value: str) -> str:
    if group == "organ":
        return tx.get_organ(value).phrase
    if group == "view":
        return tx.VIEWS[value].phrase
    if group == "echo":
        return tx.ECHO_FINDINGS[value].phrase
    return tx.get_tag(group, value).phrase


@dataclass(frozen=True)
class FindingsVocab:
    """Columns of the findings head; ``spans[k]`` is group k's (start, stop) column range."""

    groups: tuple[str, ...]
    labels: tuple[tuple[str, str], ...]  # (group, value) per column
    spans: tuple[tuple[int, int], ...]

    @classmethod
    def from_config(cls, config: FindingsConfig) -> FindingsVocab:
        labels: list[tuple[str, str]] = []
        spans: list[tuple[int, int]] = []
        for group in config.groups:
            values = _values(group)
            spans.append((len(labels), len(labels) + len(values)))
            labels.extend((group, v) for v in values)
        return cls(tuple(config.groups), tuple(labels), tuple(spans))

    @property
    def size(self) -> int:
        return len(self.labels)

    @cached_property
    def _column(self) -> dict[tuple[str, str], int]:
        return {label: j for j, label in enumerate(self.labels)}

    def column(self, group: str, value: str) -> int | None:
        """The column of (group, value); None when the head does not predict it."""
        return self._column.get((group, value))

    def _group_values(self, labels: Mapping[str, Any], group: str) -> list[str] | None:
        """The values ``labels`` give one group; None when the group is not labelled."""
        if group in ("organ", "diagnosis"):
            v = labels.get(group)
            return None if v is None else [v]
        if group == "view":
            if labels.get("view") is not None:
                return [labels["view"]]
            # an image with a known organ and no view has "no view" (a breast scan), not an unknown one
            return [NO_VIEW] if labels.get("organ") is not None else None
        if group == "echo":
            if labels.get("echo") is not None:
                return list(labels["echo"])
            # echo findings belong to an echo view: an image with an organ and no view has none
            return [] if labels.get("organ") is not None and labels.get("view") is None else None
        attrs = labels.get("attributes") or {}
        if attrs.get(group):
            return list(attrs[group])
        # no descriptor at all but a diagnosis (a normal organ, an echo frame): every tag is absent;
        # a lesion whose row skips this one dimension says nothing about it
        if not any(attrs.values()) and labels.get("diagnosis") is not None:
            return []
        return None

    def targets(self, labels: Mapping[str, Any] | None) -> tuple[Tensor, Tensor]:
        """(K,) float targets and (G,) labelled-group mask of one image's labels (None: nothing)."""
        y = torch.zeros(self.size)
        known = torch.zeros(len(self.groups))
        if not labels:
            return y, known
        for k, group in enumerate(self.groups):
            values = self._group_values(labels, group)
            if values is None:
                continue
            cols = [self._column[(group, v)] for v in values if (group, v) in self._column]
            if group in SINGLE_GROUPS and not cols:
                continue  # a value outside the taxonomy: this group is unlabelled for the image
            y[cols] = 1.0
            known[k] = 1.0
        return y, known

    def decide(self, probs: Tensor, threshold: float) -> list[dict[str, Any]]:
        """(N, K) probabilities -> one labels dict per image (the format of `labels_of_row`)."""
        out: list[dict[str, Any]] = []
        p = probs.detach().float().cpu()
        for row in p:
            labels: dict[str, Any] = {
                "organ": None,
                "view": None,
                "diagnosis": None,
                "attributes": {},
                "echo": None,
            }
            for group, (a, b) in zip(self.groups, self.spans, strict=True):
                if group in SINGLE_GROUPS:
                    value = self.labels[a + int(row[a:b].argmax())][1]
                    labels[group] = None if value == NO_VIEW else value
                    continue
                picked = [self.labels[j][1] for j in range(a, b) if float(row[j]) >= threshold]
                if group == "echo":
                    labels["echo"] = picked
                elif picked:
                    labels["attributes"][group] = picked
            # the training rule mirrored (`_group_values`): no echo view decided, no echo findings
            if "view" in self.groups and labels["view"] is None and labels["echo"]:
                labels["echo"] = []
            out.append(labels)
        return out

    def hint_text(self, labels: Mapping[str, Any]) -> str:
        """The prompt line for one image's labels (groups outside the vocabulary are left out)."""
        parts: list[str] = []
        for group in self.groups:
            if group in SINGLE_GROUPS:
                v = labels.get(group)
                if v is not None and (group, v) in self._column and v != NO_VIEW:
                    parts.append(_phrase(group, v))
            elif group == "echo":
                found = self._in_column_order(group, labels.get("echo") or ())
                if found:
                    parts.append(", ".join(found))
        attrs = labels.get("attributes") or {}
        tags = [
            p
            for g in self.groups
            if g in DESCRIPTOR_GROUPS
            for p in self._in_column_order(g, attrs.get(g, ()))
        ]
        if tags:
            parts.append(", ".join(tags))
        return f"{HINT_PREFIX} {'; '.join(parts) if parts else 'none'}."

    def _in_column_order(self, group: str, values: Sequence[str]) -> list[str]:
        """Phrases of the known values, in vocabulary order (a manifest's order and a prediction's
        must give the same text)."""
        cols = sorted(self._column[(group, v)] for v in set(values) if (group, v) in self._column)
        return [_phrase(group, self.labels[j][1]) for j in cols]

    def all_phrases(self) -> list[str]:
        """Every phrase a hint can hold (the tokenizer's corpus must cover predicted hints too)."""
        return [f"{HINT_PREFIX} none; a, b."] + [
            f"{HINT_PREFIX} {_phrase(g, v)}." for g, v in self.labels if v != NO_VIEW
        ]


class FindingsHead(nn.Module):
    """LayerNorm + Linear from pooled image features to the vocabulary's logits, and its loss."""

    def __init__(self, in_dim: int, vocab: FindingsVocab) -> None:
        super().__init__()
        self.vocab = vocab
        self.norm = nn.LayerNorm(in_dim)
        self.linear = nn.Linear(in_dim, vocab.size)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.linear(self.norm(pooled))

    def probabilities(self, logits: Tensor) -> Tensor:
        """Softmax within single-label groups, sigmoid elsewhere (N, K)."""
        parts = []
        for group, (a, b) in zip(self.vocab.groups, self.vocab.spans, strict=True):
            z = logits[:, a:b].float()
            parts.append(z.softmax(-1) if group in SINGLE_GROUPS else z.sigmoid())
        return torch.cat(parts, dim=1)

    def loss(self, logits: Tensor, targets: Tensor, known: Tensor) -> Tensor:
        """Mean over labelled groups of each group's mean loss over its labelled images."""
        total = logits.new_zeros((), dtype=torch.float32)
        n_groups = logits.new_zeros((), dtype=torch.float32)
        for k, (group, (a, b)) in enumerate(zip(self.vocab.groups, self.vocab.spans, strict=True)):
            mask = known[:, k] > 0
            n = mask.sum()
            z, y = logits[:, a:b].float(), targets[:, a:b].float()
            if group in SINGLE_GROUPS:
                per = -(y * z.log_softmax(-1)).sum(-1) / y.sum(-1).clamp(min=1)
            else:
                per = F.binary_cross_entropy_with_logits(z, y, reduction="none").mean(-1)
            total = total + (per * mask).sum() / n.clamp(min=1)
            n_groups = n_groups + (n > 0).float()
        return total / n_groups.clamp(min=1)


def stack_targets(vocab: FindingsVocab, labels: Sequence[Mapping[str, Any] | None]) -> tuple[Tensor, Tensor]:
    """(N, K) targets and (N, G) masks for a list of per-image labels."""
    if not labels:
        return torch.zeros(0, vocab.size), torch.zeros(0, len(vocab.groups))
    ys, ks = zip(*(vocab.targets(lab) for lab in labels), strict=True)
    return torch.stack(ys), torch.stack(ks)
