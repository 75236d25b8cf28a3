"""Multi-level decoders on an image tower's `feature_maps` (shared by the dense heads).

- :class:`UNetDecoder`: a UNETR / SwinUNETR-style decoder. For a ViT/DINOv2 tower the four
  same-stride maps (blocks at 1/4, 1/2, 3/4, full depth) are first lifted to a pyramid with
  transposed convolutions, as UNETR does (Hatamizadeh et al. 2022: ``z3, z6, z9`` upsampled
  x8, x4, x2; ``z12`` is the bottleneck). A Swin/ConvNeXt/MONAI-SwinV2 pyramid is used as is.
  The decoder then goes up level by level (transposed conv, concatenation with the skip, residual
  conv block) and ends at full resolution with a skip from a small conv encoder of the input
  image, which is what gives sharp mask boundaries from a stride-16 transformer.
- :class:`HTFusion`: the hybrid-tuning head's neck (NextGen-UIA): maps from the blocks at 1/4,
  1/2 and 3/4 depth, each projected by a 1x1 conv and summed deep -> shallow into one grid.

Building blocks are MONAI's (`UnetResBlock`, `get_conv_layer`); only the wiring, which has to
cope with any number of levels and strides, is written here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _res_block(in_c: int, out_c: int, norm: str) -> nn.Module:
    from monai.networks.blocks import UnetResBlock  # lazy: monai ~5 s; only the UNet decoder

    return UnetResBlock(2, in_c, out_c, kernel_size=3, stride=1, norm_name=norm)


def _transp(in_c: int, out_c: int, factor: int) -> nn.Module:
    from monai.networks.blocks.dynunet_block import get_conv_layer  # lazy: monai ~5 s; only the UNet decoder

    return get_conv_layer(
        2, in_c, out_c, kernel_size=factor, stride=factor, conv_only=True, is_transposed=True
    )


def _match(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize x to `size` when strides are not exact powers of two (e.g. a patch-14 DINOv2)."""
    return x if tuple(x.shape[-2:]) == tuple(size) else F.interpolate(x, size=size, mode="bilinear")


class Lift(nn.Module):
    """UNETR's projection-upsampling encoder block: `n_up` x2 transposed convs (+ conv blocks)."""

    def __init__(self, in_c: int, out_c: int, n_up: int, norm: str) -> None:
        super().__init__()
        if n_up == 0:
            self.blocks = nn.Sequential(_res_block(in_c, out_c, norm))
        else:
            layers: list[nn.Module] = [_transp(in_c, out_c, 2)]
            for _ in range(n_up - 1):
                layers += [_transp(out_c, out_c, 2), _res_block(out_c, out_c, norm)]
            self.blocks = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)


class UpBlock(nn.Module):
    """Upsample by `factor` (transposed conv), concatenate the skip, residual conv block."""

    def __init__(self, in_c: int, skip_c: int, out_c: int, factor: int, norm: str) -> None:
        super().__init__()
        self.up = _transp(in_c, out_c, factor) if factor > 1 else nn.Conv2d(in_c, out_c, 1)
        self.block = _res_block(out_c + skip_c, out_c, norm)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = _match(self.up(x), skip.shape[-2:])
        return self.block(torch.cat([x, skip], dim=1))


class UNetDecoder(nn.Module):
    """UNETR-style (same-stride ViT maps) or UNet-style (pyramid) decoder to full resolution.

    ``forward(feature_maps, image) -> (B, feature_size, S, S)``. ``image_channels`` is the channel
    count of the image given to the head (after any frame stacking).
    """

    def __init__(
        self,
        channels: list[int],
        strides: list[int],
        image_size: int,
        image_channels: int = 1,
        feature_size: int = 16,
        norm: str = "instance",
    ) -> None:
        super().__init__()
        self.image_size = image_size
        self.vit = len(set(strides)) == 1
        fs = feature_size
        if self.vit:
            # Four same-stride maps -> strides s/8, s/4, s/2 (clamped at 1) + the deepest as bottleneck.
            s = strides[0]
            maps = channels[-4:] if len(channels) >= 4 else channels
            n_skip = len(maps) - 1
            self.skip_channels = [fs * 2 ** (i + 1) for i in range(n_skip)]
            lifts, level_strides = [], []
            for i in range(n_skip):
                target = max(s / 2 ** (n_skip - i), 1.0)
                n_up = round(math.log2(s / target))
                lifts.append(Lift(maps[i], self.skip_channels[i], n_up, norm))
                level_strides.append(s / 2**n_up)
            self.lifts = nn.ModuleList(lifts)
            self.level_strides = [*level_strides, float(s)]
            self.n_maps = len(maps)
            bottom_c = maps[-1]
        else:
            order = sorted(range(len(strides)), key=lambda i: strides[i])
            if order != list(range(len(strides))):
                raise ValueError(f"feature maps must go from fine to coarse strides, got {strides}")
            self.skip_channels = [fs * 2 ** (i + 1) for i in range(len(channels) - 1)]
            self.lifts = nn.ModuleList(
                Lift(c, sc, 0, norm) for c, sc in zip(channels[:-1], self.skip_channels, strict=True)
            )
            self.level_strides = [float(s) for s in strides]
            self.n_maps = len(channels)
            bottom_c = channels[-1]
        ups = []
        in_c = bottom_c
        for i in range(len(self.skip_channels) - 1, -1, -1):
            factor = max(1, round(self.level_strides[i + 1] / self.level_strides[i]))
            ups.append(UpBlock(in_c, self.skip_channels[i], self.skip_channels[i], factor, norm))
            in_c = self.skip_channels[i]
        self.ups = nn.ModuleList(ups)
        self.image_encoder = _res_block(image_channels, fs, norm)
        last = max(1, round(self.level_strides[0]))
        self.final = UpBlock(in_c, fs, fs, last, norm)
        self.out_channels = fs

    def forward(self, feature_maps: list[Tensor], image: Tensor) -> Tensor:
        maps = feature_maps[-self.n_maps :]
        skips = [lift(m) for lift, m in zip(self.lifts, maps[:-1], strict=True)]
        x = maps[-1]
        for up, skip in zip(self.ups, reversed(skips), strict=True):
            x = up(x, skip)
        return self.final(x, self.image_encoder(image))


class HTFusion(nn.Module):
    """Hybrid-tuning neck: chosen levels projected (1x1 conv) and summed deep -> shallow into one grid.

    Each partial sum passes a 3x3 conv + GroupNorm + GELU before the next (shallower) level is
    added, so the deeper context is refined before it meets finer detail; coarser maps (pyramid
    towers) are upsampled bilinearly to the finer grid before the sum.
    """

    def __init__(self, channels: list[int], dim: int = 128, levels: list[int] | None = None) -> None:
        super().__init__()
        self.levels = list(levels) if levels is not None else list(range(len(channels)))
        self.proj = nn.ModuleList(nn.Conv2d(channels[i], dim, 1) for i in self.levels)
        self.smooth = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1), nn.GroupNorm(_groups(dim), dim), nn.GELU())
            for _ in self.levels
        )
        self.out_channels = dim

    def forward(self, feature_maps: list[Tensor]) -> Tensor:
        x: Tensor | None = None
        for k in range(len(self.levels) - 1, -1, -1):  # deep -> shallow
            y = self.proj[k](feature_maps[self.levels[k]])
            x = y if x is None else _match(x, y.shape[-2:]) + y
            x = self.smooth[k](x)
        assert x is not None
        return x


def _groups(channels: int) -> int:
    for g in (32, 16, 8, 4, 2):
        if channels % g == 0:
            return g
    return 1


def ht_levels(n_maps: int, same_stride: bool) -> list[int]:
    """Levels the HT neck uses: ViT blocks at 1/4, 1/2, 3/4 depth (maps 0-2 of 4); all levels of a pyramid."""
    if same_stride and n_maps >= 4:
        return [0, 1, 2]
    return list(range(n_maps))
