"""Classification heads: (B, K) logits from an image tower's feature maps.

- ``ht``: the hybrid-tuning head (NextGen-UIA): HT neck (blocks at 1/4, 1/2, 3/4 depth fused
  deep -> shallow), global average pooling, dropout, linear.
- ``pool``: global average pooling of the deepest map, LayerNorm, dropout, linear (a linear
  probe when the tower is frozen).
"""

from __future__ import annotations

from torch import Tensor, nn

from sonofm.models.heads.pyramid import HTFusion, ht_levels

CLS_HEADS = ("auto", "ht", "pool")


class HTClsHead(nn.Module):
    def __init__(
        self, channels: list[int], strides: list[int], num_classes: int, dim: int = 128, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.neck = HTFusion(channels, dim, ht_levels(len(channels), len(set(strides)) == 1))
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, feature_maps: list[Tensor]) -> Tensor:
        return self.fc(self.drop(self.neck(feature_maps).mean(dim=(2, 3))))


class PoolClsHead(nn.Module):
    def __init__(self, channels: list[int], num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels[-1])
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(channels[-1], num_classes)

    def forward(self, feature_maps: list[Tensor]) -> Tensor:
        return self.fc(self.drop(self.norm(feature_maps[-1].mean(dim=(2, 3)))))


def build_classification_head(
    kind: str,
    channels: list[int],
    strides: list[int],
    num_classes: int,
    *,
    dim: int = 128,
    dropout: float = 0.1,
) -> nn.Module:
    """`kind`: ht (also "auto") or pool."""
    if kind in ("auto", "ht"):
        return HTClsHead(channels, strides, num_classes, dim, dropout)
    if kind == "pool":
        return PoolClsHead(channels, num_classes, dropout)
    raise ValueError(f"unknown classification head {kind!r}; choose one of {CLS_HEADS}")
