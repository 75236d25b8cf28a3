"""Anchor-free box detection head (CenterNet, Zhou et al. 2019) on the shared pyramid decoder.

Outputs at stride s (`PyramidDecoder`, default s = 4): per-class centre heatmap logits, the box
size as log(width/s, height/s) and the sub-cell centre offset in [0, 1) (sigmoid). Training
targets are built by `centernet_targets`: an elliptical Gaussian (TTFNet's alpha = 0.54 of the
box size / 6) per box on its class channel with 1 at the centre cell; loss = CenterNet's
penalty-reduced focal loss + L1 on size and offset at centre cells. `decode_boxes` does the
3x3 max-pool "NMS" and top-k, returning boxes in input pixels (x0, y0, x1, y1; pixel i spans
[i, i + 1)).

Written here (not torchvision/detectron: not available in this environment, and torchvision is
excluded by the project) because CenterNet is a few dozen lines on top of a dense decoder.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sonofm.models.heads.landmarks import ConvBlock, DecoderHead

PRIOR_PROB = 0.05


class CenterNetHead(DecoderHead):
    """Decoder + three small branches: heatmap (num_classes), log size (2), offset (2).

    ``decoder``: the `DecoderHead` options (dim, out_stride)."""

    def __init__(
        self, feature_channels: list[int], feature_strides: list[int], num_classes: int = 1, **decoder: int
    ) -> None:
        super().__init__(feature_channels, feature_strides, **decoder)
        c = self.decoder.out_channels

        def branch(out: int) -> nn.Sequential:
            return nn.Sequential(ConvBlock(c, c), nn.Conv2d(c, out, 1))

        self.heatmap = branch(num_classes)
        self.size = branch(2)
        self.offset = branch(2)
        nn.init.constant_(self.heatmap[-1].bias, -math.log((1 - PRIOR_PROB) / PRIOR_PROB))
        self.num_classes = num_classes

    def forward(self, feats: list[Tensor]) -> dict[str, Tensor]:
        x = self.decoder(feats)
        return {"heatmap": self.heatmap(x), "size": self.size(x), "offset": self.offset(x)}


def centernet_targets(
    boxes: list[Tensor], labels: list[Tensor], num_classes: int, size: tuple[int, int], stride: float
) -> dict[str, Tensor]:
    """Dense targets for one batch; boxes per image (n_i, 4) in input pixels, labels (n_i,)."""
    h, w = size
    b = len(boxes)
    heat = torch.zeros(b, num_classes, h, w)
    size_t = torch.zeros(b, 2, h, w)
    off_t = torch.zeros(b, 2, h, w)
    mask = torch.zeros(b, h, w)
    ys = torch.arange(h, dtype=torch.float32).view(h, 1)
    xs = torch.arange(w, dtype=torch.float32).view(1, w)
    for i, (bx, lb) in enumerate(zip(boxes, labels, strict=True)):
        bx = bx.detach().float().cpu().reshape(-1, 4)
        # largest boxes first, so a small box's centre cell (written later) wins a collision
        order = torch.argsort((bx[:, 2] - bx[:, 0]) * (bx[:, 3] - bx[:, 1]), descending=True)
        for j in order.tolist():
            x0, y0, x1, y1 = (float(v) / stride for v in bx[j])
            bw, bh = x1 - x0, y1 - y0
            if bw <= 0 or bh <= 0:
                continue
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2  # in cell-edge units: cell k spans [k, k + 1)
            ci, cj = min(int(cx), w - 1), min(int(cy), h - 1)
            sx, sy = max(0.54 * bw / 6, 0.5), max(0.54 * bh / 6, 0.5)
            g = torch.exp(-((xs + 0.5 - cx) ** 2) / (2 * sx * sx) - ((ys + 0.5 - cy) ** 2) / (2 * sy * sy))
            k = int(lb.reshape(-1)[j]) if lb.numel() else 0
            heat[i, k] = torch.maximum(heat[i, k], g)
            heat[i, k, cj, ci] = 1.0
            size_t[i, :, cj, ci] = torch.tensor([math.log(bw), math.log(bh)])
            off_t[i, :, cj, ci] = torch.tensor([cx - ci, cy - cj])
            mask[i, cj, ci] = 1.0
    return {"heatmap": heat, "size": size_t, "offset": off_t, "mask": mask}


def centernet_loss(outputs: dict[str, Tensor], targets: dict[str, Tensor]) -> dict[str, Tensor]:
    """Penalty-reduced focal loss (alpha 2, beta 4) + L1 size/offset at centre cells."""
    dev = outputs["heatmap"].device
    t = {k: v.to(dev) for k, v in targets.items()}
    logits = outputs["heatmap"].float()
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = t["heatmap"].eq(1.0).float()
    n_pos = pos.sum().clamp_min(1.0)
    pos_loss = -(F.logsigmoid(logits) * (1 - p) ** 2 * pos).sum()
    neg_loss = -(F.logsigmoid(-logits) * p**2 * (1 - t["heatmap"]) ** 4 * (1 - pos)).sum()
    m = t["mask"].unsqueeze(1)
    n = m.sum().clamp_min(1.0)
    size_l1 = ((outputs["size"].float() - t["size"]).abs() * m).sum() / n
    off_l1 = ((torch.sigmoid(outputs["offset"].float()) - t["offset"]).abs() * m).sum() / n
    return {"focal": (pos_loss + neg_loss) / n_pos, "size_l1": 0.5 * size_l1, "offset_l1": off_l1}


@torch.no_grad()
def decode_boxes(
    outputs: dict[str, Tensor], stride: float, *, top_k: int = 20, min_score: float = 0.01
) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Per image: (boxes (n, 4) input pixels, scores (n,), labels (n,)), highest scores first."""
    heat = torch.sigmoid(outputs["heatmap"].float())
    b, c, h, w = heat.shape
    peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
    k = min(top_k, c * h * w)
    scores, idx = peaks.reshape(b, -1).topk(k, dim=1)
    cls = idx // (h * w)
    cell = idx % (h * w)
    cy, cx = (cell // w).float(), (cell % w).float()
    size = outputs["size"].float().reshape(b, 2, -1)
    off = torch.sigmoid(outputs["offset"].float()).reshape(b, 2, -1)
    out = []
    for i in range(b):
        bw = torch.exp(size[i, 0, cell[i]].clamp(max=10))
        bh = torch.exp(size[i, 1, cell[i]].clamp(max=10))
        x = cx[i] + off[i, 0, cell[i]]
        y = cy[i] + off[i, 1, cell[i]]
        xs = torch.stack([x - bw / 2, x + bw / 2]).clamp(0, w) * stride
        ys = torch.stack([y - bh / 2, y + bh / 2]).clamp(0, h) * stride
        boxes = torch.stack([xs[0], ys[0], xs[1], ys[1]], dim=1)
        keep = scores[i] >= min_score
        out.append((boxes[keep].cpu(), scores[i][keep].cpu(), cls[i][keep].cpu()))
    return out
