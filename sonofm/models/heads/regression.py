"""Regression head for scalar targets from (multi-frame) feature pyramids, e.g. EF from ED/ES.

For a 2-frame input `TaskModel` concatenates the per-frame maps along channels (frame-major),
so at level i the head sees ``[ED features, ES features]`` at the same spatial positions. A
1x1 conv over that concatenation can form per-position differences (how far each wall point
moved between frames), a 3x3 conv adds neighbourhood context, and global average pooling
turns the spatially integrated change (cavity area change, the quantity EF summarises) into
a vector; the pooled vectors of all levels go through an MLP to the outputs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sonofm.models.heads.landmarks import PyramidDecoder


class PooledRegressionHead(nn.Module):
    """Per level: channel LayerNorm, 1x1 conv + GELU, 3x3 conv + GELU, global average pool; MLP."""

    def __init__(
        self, in_channels: list[int], *, out_dim: int = 1, dim: int = 96, dropout: float = 0.1
    ) -> None:
        super().__init__()
        # Normalisation: only per position over channels (LayerNorm of each feature vector, which
        # rescales e.g. a freshly initialised ViT's small activations); a per-sample norm over
        # space (GroupNorm) before the pooling would remove exactly the sample-level differences
        # (how much the cavity changed) that the pooled vector must carry.
        self.norms = nn.ModuleList(nn.LayerNorm(int(c)) for c in in_channels)
        self.levels = nn.ModuleList(
            nn.Sequential(nn.Conv2d(int(c), dim, 1), nn.GELU(), nn.Conv2d(dim, dim, 3, padding=1), nn.GELU())
            for c in in_channels
        )
        self.mlp = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(dim * len(in_channels), dim),
            nn.GELU(),
            nn.Linear(dim, out_dim),
        )
        self.out_dim = out_dim

    def forward(self, feats: list[Tensor]) -> Tensor:
        pooled = [
            level(norm(f.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)).mean(dim=(2, 3))
            for norm, level, f in zip(self.norms, self.levels, feats, strict=True)
        ]
        out = self.mlp(torch.cat(pooled, dim=1))
        return out.squeeze(-1) if self.out_dim == 1 else out


class PairEFHead(nn.Module):
    """EF from an ED/ES pair: pooled comparison features + a left-ventricle area branch.

    Input: maps with ``frames * C_i`` channels (frame-major, as `TaskModel` concatenates them).
    Each frame's maps go through a shared `PyramidDecoder` to an LV segmentation logit map
    (trained with the LV masks where the data has them); the soft LV areas A_ED, A_ES give the
    area-length estimate ``1 - (A_ES / A_ED)^1.5`` (volume ~ area^1.5 for a fixed shape), which is
    fed, with the areas, next to the pooled features into the regression MLP and through a direct
    linear path. The area branch
    is what makes EF learnable from a few hundred pairs: EF is, by definition, a ratio of cavity
    sizes, and the masks tell the tower where the cavity is.

    Output: dict ``ef`` (B,) standardised EF and ``lv_logits`` (B, frames, h, w).
    """

    def __init__(
        self,
        in_channels: list[int],
        strides: list[int],
        *,
        frames: int = 2,
        dim: int = 96,
        dropout: float = 0.1,
        seg_dim: int = 32,
        out_stride: int = 4,
    ) -> None:
        super().__init__()
        if frames != 2:
            raise ValueError(f"PairEFHead needs an ED/ES pair (frames=2), got frames={frames}")
        self.frames = frames
        per_frame = [int(c) // frames for c in in_channels]
        self.pooled = PooledRegressionHead(in_channels, out_dim=dim, dim=dim, dropout=0.0)
        self.decoder = PyramidDecoder(per_frame, strides, dim=seg_dim, out_stride=out_stride)
        self.seg = nn.Conv2d(self.decoder.out_channels, 1, 1)
        self.mlp = nn.Sequential(
            nn.GELU(), nn.Dropout(dropout), nn.Linear(dim + 3, dim), nn.GELU(), nn.Linear(dim, 1)
        )
        # a direct linear path from the area features: EF is nearly linear in the area-length
        # estimate (per view), so the regression need not discover it through the MLP
        self.area_linear = nn.Linear(3, 1)

    def forward(self, feats: list[Tensor]) -> dict[str, Tensor]:
        b = feats[0].shape[0]
        f = self.frames
        # (B, F*C, h, w) -> (B*F, C, h, w): frame-major channels, one decoder pass for all frames
        per_frame = [m.reshape(b, f, m.shape[1] // f, *m.shape[-2:]).flatten(0, 1) for m in feats]
        logits = self.seg(self.decoder(per_frame))  # (B*F, 1, h, w)
        logits = logits.reshape(b, f, *logits.shape[-2:])
        area = torch.sigmoid(logits.float()).mean(dim=(2, 3))  # (B, F) fraction of the image
        a_ed, a_es = area[:, 0], area[:, 1]
        ratio = (a_es / a_ed.clamp_min(1e-4)).clamp(0.0, 2.0)
        area_ef = 1.0 - ratio**1.5  # area-length estimate, as a fraction
        extra = torch.stack([area_ef * 4.0, a_ed * 10.0, a_es * 10.0], dim=1).to(feats[0].dtype)
        ef = self.mlp(torch.cat([self.pooled(feats), extra], dim=1)) + self.area_linear(extra)
        ef = ef.squeeze(-1)
        return {"ef": ef, "lv_logits": logits}
