"""Segmentation heads: per-pixel class logits (B, K, S, S) at the input resolution.

- ``unet``: :class:`~sonofm.models.heads.pyramid.UNetDecoder` (UNETR-style for ViT/DINOv2,
  UNet/FPN-style for Swin/ConvNeXt/MONAI-SwinV2) + a 1x1 conv. Uses the input image as its
  full-resolution skip (``wants_image``).
- ``ht``: the hybrid-tuning head (NextGen-UIA): the HT neck's grid, a 1x1 conv to class logits,
  bilinear upsampling to the image size. (1x1 conv and bilinear upsampling are both linear and
  commute, so classifying on the grid and upsampling the logits equals upsampling then
  classifying, at a fraction of the cost.)
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from sonofm.models.heads.pyramid import HTFusion, UNetDecoder, ht_levels

SEG_HEADS = ("auto", "unet", "unetr", "ht")


class UNetSegHead(nn.Module):
    wants_image = True

    def __init__(
        self,
        channels: list[int],
        strides: list[int],
        image_size: int,
        num_classes: int,
        image_channels: int = 1,
        feature_size: int = 16,
    ) -> None:
        super().__init__()
        self.decoder = UNetDecoder(channels, strides, image_size, image_channels, feature_size)
        self.out = nn.Conv2d(self.decoder.out_channels, num_classes, 1)

    def forward(self, feature_maps: list[Tensor], image: Tensor) -> Tensor:
        return self.out(self.decoder(feature_maps, image))


class HTSegHead(nn.Module):
    wants_image = False

    def __init__(
        self, channels: list[int], strides: list[int], image_size: int, num_classes: int, dim: int = 128
    ) -> None:
        super().__init__()
        self.image_size = image_size
        self.neck = HTFusion(channels, dim, ht_levels(len(channels), len(set(strides)) == 1))
        self.out = nn.Conv2d(dim, num_classes, 1)

    def forward(self, feature_maps: list[Tensor]) -> Tensor:
        logits = self.out(self.neck(feature_maps))
        return F.interpolate(logits, size=(self.image_size, self.image_size), mode="bilinear")


def build_segmentation_head(
    kind: str,
    channels: list[int],
    strides: list[int],
    image_size: int,
    num_classes: int,
    *,
    image_channels: int = 1,
    feature_size: int = 16,
    dim: int = 128,
) -> nn.Module:
    """`kind`: unet/unetr (the multi-level decoder; the two names are one class) or ht."""
    if kind in ("auto", "unet", "unetr"):
        return UNetSegHead(channels, strides, image_size, num_classes, image_channels, feature_size)
    if kind == "ht":
        return HTSegHead(channels, strides, image_size, num_classes, dim)
    raise ValueError(f"unknown segmentation head {kind!r}; choose one of {SEG_HEADS}")
