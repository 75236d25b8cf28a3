"""Residual enhancement (despeckling) head: the tower's context + a full-resolution image path.

The pyramid decoder brings the tower's features (what tissue is where: edges to keep, regions
to smooth) back to full resolution; a shallow full-resolution conv stem sees the input image's
own pixels, which the stride-16 features cannot carry. Their concatenation predicts a residual,
and the output is ``clamp(image + residual, 0, 1)``, so an untrained head starts near the
identity and only has to learn the speckle to remove (the DnCNN residual-learning argument).

`wants_image = True` tells `TaskModel` to call ``head(feature_maps, image=images)``. Without
an image the head predicts the clean image directly from the features (sigmoid output).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sonofm.models.heads.landmarks import ConvBlock, DecoderHead


class ResidualEnhancementHead(DecoderHead):
    """Decoder to stride 1 + image stem -> residual (or direct output without an image)."""

    wants_image = True

    def __init__(
        self,
        feature_channels: list[int],
        feature_strides: list[int],
        *,
        dim: int = 64,
        stem_dim: int = 16,
        in_chans: int = 1,
    ) -> None:
        super().__init__(feature_channels, feature_strides, dim=dim, out_stride=1)
        c = self.decoder.out_channels
        self.stem = nn.Sequential(ConvBlock(in_chans, stem_dim), ConvBlock(stem_dim, stem_dim))
        self.fuse = nn.Sequential(
            ConvBlock(c + stem_dim, stem_dim), nn.Conv2d(stem_dim, in_chans, 3, padding=1)
        )
        self.direct = nn.Sequential(ConvBlock(c, stem_dim), nn.Conv2d(stem_dim, in_chans, 3, padding=1))
        nn.init.zeros_(self.fuse[-1].weight)  # start at the identity mapping
        nn.init.zeros_(self.fuse[-1].bias)

    def forward(self, feats: list[Tensor], image: Tensor | None = None) -> Tensor:
        x = self.decoder(feats)
        if image is None:
            return torch.sigmoid(self.direct(x))
        if x.shape[-2:] != image.shape[-2:]:
            x = nn.functional.interpolate(x, size=image.shape[-2:], mode="bilinear", align_corners=False)
        residual = self.fuse(torch.cat([x, self.stem(image)], dim=1))
        return (image + residual).clamp(0.0, 1.0)
