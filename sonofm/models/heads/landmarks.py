"""Landmark heatmap head and the shared multi-level decoder of the dense fine-tuning heads.

`PyramidDecoder` turns an image tower's `feature_maps` (any number of levels, any strides:
ViT's four same-stride maps, Swin/ConvNeXt's 4-stage pyramid, MONAI SwinV2's 5 levels) into
one map at a finer stride: a 1x1 projection per level, an FPN-style top-down merge (coarse
levels upsampled and added to finer ones; same-stride ViT levels are simply summed, the
NextGen-UIA choice), then x2 upsampling conv stages down to `out_stride`. The landmark,
detection and enhancement heads all sit on it.

Heatmap geometry: heatmap cell (i, j) at stride s has its centre at image pixel
``((j + 0.5) * s - 0.5, (i + 0.5) * s - 0.5)`` (pixel centres at integer coordinates, the
convention of `sonofm.data.dataset`). `image_to_heatmap` / `heatmap_to_image` convert points.

Sub-pixel decoding: `soft_argmax` (the expectation of the spatial softmax of the logits; what
the loss trains, DSNT/integral regression) and `quadratic_refine` (argmax + one Newton step on
the log-heatmap, as in DARK, Zhang et al. CVPR 2020: exact for a Gaussian peak).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _groups(channels: int) -> int:
    for g in (8, 4, 2):
        if channels % g == 0:
            return g
    return 1


class ConvBlock(nn.Sequential):
    """3x3 conv + GroupNorm + GELU (GroupNorm: batch-size independent, fine at batch 2)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.GroupNorm(_groups(cout), cout), nn.GELU()
        )


class PyramidDecoder(nn.Module):
    """Feature pyramid -> one (B, out_channels, S / out_stride, S / out_stride) map (see module doc).

    `in_channels` may differ from the tower's channels (e.g. 2x for ED/ES pairs).
    """

    def __init__(
        self,
        in_channels: list[int],
        strides: list[int],
        *,
        dim: int = 64,
        out_stride: int = 4,
        min_dim: int = 16,
    ) -> None:
        super().__init__()
        if len(in_channels) != len(strides) or not in_channels:
            raise ValueError(f"need one stride per feature level, got {in_channels} and {strides}")
        self.strides = [int(s) for s in strides]
        self.lateral = nn.ModuleList(nn.Conv2d(int(c), dim, 1) for c in in_channels)
        self.merge = ConvBlock(dim, dim)
        finest = min(self.strides)
        n_up = max(0, round(math.log2(finest / out_stride))) if out_stride < finest else 0
        ups, c = [], dim
        for _ in range(n_up):
            nxt = max(c // 2, min_dim)
            ups.append(ConvBlock(c, nxt))
            c = nxt
        self.up = nn.ModuleList(ups)
        self.out_channels = c
        self.out_stride = finest // (2**n_up)

    def forward(self, feats: list[Tensor]) -> Tensor:
        order = sorted(range(len(feats)), key=lambda i: -self.strides[i])  # coarse -> fine
        x: Tensor | None = None
        for i in order:
            f = self.lateral[i](feats[i])
            if x is None:
                x = f
            else:
                if x.shape[-2:] != f.shape[-2:]:
                    x = F.interpolate(x, size=f.shape[-2:], mode="bilinear", align_corners=False)
                x = x + f
        assert x is not None
        x = self.merge(x)
        for block in self.up:
            x = block(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
        return x


class DecoderHead(nn.Module):
    """A dense head on the shared `PyramidDecoder` (landmarks, detection, enhancement): builds
    ``self.decoder`` from the tower's feature channels and strides; subclasses add their branches
    on ``self.decoder.out_channels``."""

    def __init__(
        self, feature_channels: list[int], feature_strides: list[int], *, dim: int = 64, out_stride: int = 4
    ) -> None:
        super().__init__()
        self.decoder = PyramidDecoder(feature_channels, feature_strides, dim=dim, out_stride=out_stride)


class LandmarkHead(DecoderHead):
    """Multi-level decoder + 1x1 conv to one heatmap (logits) per landmark, at `out_stride`.

    ``decoder``: the `DecoderHead` options (dim, out_stride)."""

    def __init__(
        self, feature_channels: list[int], feature_strides: list[int], num_landmarks: int, **decoder: int
    ) -> None:
        super().__init__(feature_channels, feature_strides, **decoder)
        self.out = nn.Conv2d(self.decoder.out_channels, num_landmarks, 1)
        self.num_landmarks = num_landmarks

    def forward(self, feats: list[Tensor]) -> Tensor:
        return self.out(self.decoder(feats))  # (B, K, h, w) heatmap logits


# ----------------------------------------------------------------------------- geometry


def image_to_heatmap(points: Tensor, stride: float) -> Tensor:
    """Image pixel coordinates (x, y) -> heatmap cell coordinates at `stride`."""
    return (points + 0.5) / stride - 0.5


def heatmap_to_image(points: Tensor, stride: float) -> Tensor:
    """Heatmap cell coordinates -> image pixel coordinates (inverse of `image_to_heatmap`)."""
    return (points + 0.5) * stride - 0.5


def gaussian_heatmaps(points: Tensor, size: tuple[int, int], sigma: float) -> Tensor:
    """Unnormalised Gaussians (peak 1 at the point) on an (h, w) grid; points (..., 2) in cells."""
    h, w = size
    ys = torch.arange(h, dtype=points.dtype, device=points.device)
    xs = torch.arange(w, dtype=points.dtype, device=points.device)
    dx = xs.view(*([1] * (points.ndim - 1)), 1, w) - points[..., 0, None, None]
    dy = ys.view(*([1] * (points.ndim - 1)), h, 1) - points[..., 1, None, None]
    return torch.exp(-(dx * dx + dy * dy) / (2.0 * sigma * sigma))


def soft_argmax(logits: Tensor) -> Tensor:
    """(B, K, h, w) logits -> (B, K, 2) expected (x, y) under the spatial softmax, in cells."""
    b, k, h, w = logits.shape
    p = torch.softmax(logits.reshape(b, k, h * w).float(), dim=-1).reshape(b, k, h, w)
    xs = torch.arange(w, dtype=p.dtype, device=p.device)
    ys = torch.arange(h, dtype=p.dtype, device=p.device)
    x = (p.sum(dim=2) * xs).sum(dim=-1)
    y = (p.sum(dim=3) * ys).sum(dim=-1)
    return torch.stack([x, y], dim=-1)


def quadratic_refine(heatmaps: Tensor, eps: float = 1e-10) -> Tensor:
    """(B, K, h, w) positive heatmaps -> (B, K, 2) sub-cell peaks (argmax + Newton step on log).

    For a Gaussian peak the log-heatmap is exactly quadratic, so the central-difference
    gradient and Hessian give its centre exactly (DARK). At the border, or where the Hessian is
    not negative definite, the integer argmax is kept.
    """
    b, k, h, w = heatmaps.shape
    logh = torch.log(heatmaps.float().clamp_min(eps))
    flat = logh.reshape(b, k, -1).argmax(dim=-1)
    py, px = (flat // w), (flat % w)
    out = torch.stack([px, py], dim=-1).to(logh.dtype)
    pad = F.pad(logh, (1, 1, 1, 1), mode="replicate")

    def at(dy: int, dx: int) -> Tensor:
        idx = ((py + 1 + dy) * (w + 2) + (px + 1 + dx)).unsqueeze(-1)
        return pad.reshape(b, k, -1).gather(-1, idx).squeeze(-1)

    c = at(0, 0)
    dx = 0.5 * (at(0, 1) - at(0, -1))
    dy = 0.5 * (at(1, 0) - at(-1, 0))
    dxx = at(0, 1) - 2 * c + at(0, -1)
    dyy = at(1, 0) - 2 * c + at(-1, 0)
    dxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    det = dxx * dyy - dxy * dxy
    inner = (px > 0) & (px < w - 1) & (py > 0) & (py < h - 1)
    ok = inner & (det > eps) & (dxx < 0)
    safe = torch.where(ok, det, torch.ones_like(det))
    ox = -(dyy * dx - dxy * dy) / safe
    oy = -(dxx * dy - dxy * dx) / safe
    offset = torch.stack([ox, oy], dim=-1).clamp(-1.0, 1.0)
    return out + torch.where(ok.unsqueeze(-1), offset, torch.zeros_like(offset))
