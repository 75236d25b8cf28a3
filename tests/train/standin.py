"""A small stand-in dual encoder and synthetic paired data for trainer tests.

The model follows the DualEncoder forward contract (image_features, text_features, logit_scale,
logit_bias) and has dropout, a LayerNorm and an embedding so RNG handling and weight-decay
exclusions are exercised; the data are random images paired with token ids derived from them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

VOCAB = 32
SEQ = 6


class StandInDual(nn.Module):
    def __init__(self, dim: int = 8, dropout: float = 0.1, bias: bool = False) -> None:
        super().__init__()
        self.image_proj = nn.Sequential(
            nn.Flatten(), nn.Linear(64, 16), nn.Dropout(dropout), nn.Linear(16, dim)
        )
        self.token_embedding = nn.Embedding(VOCAB, 16)
        self.norm = nn.LayerNorm(16)
        self.text_proj = nn.Linear(16, dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.logit_bias = nn.Parameter(torch.tensor(-2.0)) if bias else None

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
        img = F.normalize(self.image_proj(images), dim=-1)
        tok = self.norm(self.token_embedding(input_ids))
        mask = attention_mask.unsqueeze(-1).to(tok.dtype)
        txt = F.normalize(self.text_proj((tok * mask).sum(1) / mask.sum(1).clamp_min(1)), dim=-1)
        return {
            "image_features": img,
            "text_features": txt,
            "logit_scale": self.logit_scale.exp().clamp(max=100),
            "logit_bias": self.logit_bias,
        }


class PairData(Dataset):
    """n pairs: an 8x8 image and 6 tokens computed from it (so pairs are learnable)."""

    def __init__(self, n: int = 48, seed: int = 0, broken: tuple[int, ...] = ()) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, 1, 8, 8, generator=g)
        self.ids = (self.images.flatten(1)[:, :SEQ] * VOCAB).long().clamp(max=VOCAB - 1)
        self.broken = set(broken)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        if i in self.broken:
            return None  # as UltrasoundDataset does for an image that fails to decode
        return {
            "image": self.images[i],
            "input_ids": self.ids[i],
            "attention_mask": torch.ones(SEQ, dtype=torch.long),
        }


def collate(items: list[dict[str, Any] | None]) -> dict[str, Any]:
    kept = [x for x in items if x is not None]
    out: dict[str, Any] = {"n_skipped": len(items) - len(kept)}
    for key in ("image", "input_ids", "attention_mask"):
        out[key] = torch.stack([x[key] for x in kept])
    return out


class PairStream(torch.utils.data.IterableDataset):
    """The same pairs as a stream whose order depends only on (seed, epoch), like shard readers."""

    def __init__(self, n: int = 40, seed: int = 0, length: int | None = None) -> None:
        self.pairs = PairData(n, seed)
        self.epoch = 0
        self.length = n if length is None else length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        order = torch.randperm(len(self.pairs), generator=torch.Generator().manual_seed(100 + self.epoch))
        for i in order.tolist():
            yield self.pairs[i]
