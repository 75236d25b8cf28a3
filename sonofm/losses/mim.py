"""Self-supervised losses: masked image modelling (SimMIM) and the hierarchical anatomy classifier.

Masked image modelling (Xie et al., SimMIM, 2022): a random set of square "mask patches" is
replaced by a learnable mask token after the patch embedding, a light decoder predicts the raw
pixels, and the loss is the L1 (or L2) error on the *masked* patches only. With ``norm_pix`` the
target of every patch is normalised by its own mean and standard deviation (MAE's ``norm_pix_loss``),
which stresses local structure such as speckle and edges over overall brightness.

Hierarchical classifier (EchoCare's representation-level branch, as sonofm decides it, docs/methods.md
section 3): region -> organ (and view for echo) on the pooled feature. Organs are scored
*within* their region: ``log P(organ) = log P(region(organ)) + log P(organ | region(organ))``,
where ``P(organ | region)`` is a softmax over the organs of that region only
(``sonofm.taxonomy.organs_in``). The organ loss is the cross-entropy of ``P(organ | true region)``,
so it never pushes an organ against organs of another region (the region head does that), and
organ predictions always agree with the region hierarchy. Missing labels are ``ignore_index``.

These are written here rather than taken from a library: none of transformers, MONAI or torch
ship a masked-patch pixel loss with per-patch normalisation or a grouped (hierarchical) softmax.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100


def random_patch_mask(
    batch: int,
    grid_hw: tuple[int, int],
    ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Bool mask (B, Gh, Gw) with exactly ``round(ratio * Gh * Gw)`` True cells per sample.

    At least one cell is masked and at least one left visible (when the grid has two or more
    cells), so the loss and the visible context are never empty. Cells are drawn uniformly
    without replacement (the argsort of i.i.d. noise, as MAE/SimMIM do).
    """
    gh, gw = int(grid_hw[0]), int(grid_hw[1])
    n = gh * gw
    if n < 1:
        raise ValueError(f"mask grid must be at least 1x1, got {grid_hw}")
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"mask ratio must be in (0, 1), got {ratio}")
    k = num_masked(n, ratio)
    noise_device = generator.device if generator is not None else device
    noise = torch.rand(batch, n, generator=generator, device=noise_device)
    mask = torch.zeros(batch, n, dtype=torch.bool, device=noise.device)
    mask.scatter_(1, noise.argsort(dim=1)[:, :k], True)
    mask = mask.view(batch, gh, gw)
    return mask.to(device) if device is not None else mask


def num_masked(n: int, ratio: float) -> int:
    """Cells masked out of ``n`` at ``ratio`` (round half up, clipped to [1, n-1] when n >= 2)."""
    k = int(math.floor(ratio * n + 0.5))
    return max(1, min(k, n - 1)) if n >= 2 else 1


def upsample_mask(mask: Tensor, factor: int) -> Tensor:
    """(B, Gh, Gw) -> (B, Gh*f, Gw*f): every cell becomes an f x f block (a finer grid)."""
    if factor == 1:
        return mask
    return mask.repeat_interleave(factor, dim=1).repeat_interleave(factor, dim=2)


def patchify(images: Tensor, patch: int) -> Tensor:
    """(B, C, H, W) -> (B, H/p * W/p, p*p*C), patches in row-major grid order."""
    b, c, h, w = images.shape
    if h % patch or w % patch:
        raise ValueError(f"image size {(h, w)} is not a multiple of the patch size {patch}")
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def mim_loss(
    pred: Tensor,
    target: Tensor,
    mask: Tensor,
    *,
    norm_pix: bool = True,
    loss: str = "l1",
    eps: float = 1e-6,
) -> Tensor:
    """Mean per-value L1/L2 error over the MASKED patches only.

    pred, target: (B, N, P) patch vectors (see :func:`patchify`); mask: (B, N) or (B, Gh, Gw)
    bool, True = masked. ``norm_pix`` normalises each target patch to zero mean and unit
    (population) variance: ``(t - mean) / sqrt(var + eps)``. Returns 0 (with a graph) when
    nothing is masked.
    """
    if pred.shape != target.shape or pred.ndim != 3:
        raise ValueError(
            f"pred and target must both be (B, N, P), got {tuple(pred.shape)}, {tuple(target.shape)}"
        )
    m = mask.reshape(mask.shape[0], -1)
    if m.shape != pred.shape[:2]:
        raise ValueError(f"mask has {tuple(m.shape)} cells but pred has {tuple(pred.shape[:2])} patches")
    pred = pred.float()
    target = target.float()
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True, unbiased=False)
        target = (target - mean) / (var + eps).sqrt()
    if loss == "l1":
        err = (pred - target).abs()
    elif loss == "l2":
        err = (pred - target).square()
    else:
        raise ValueError(f"loss must be 'l1' or 'l2', got {loss!r}")
    w = m.to(err.dtype)
    return (err.mean(dim=-1) * w).sum() / w.sum().clamp(min=1.0)


def masked_cross_entropy(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Cross-entropy averaged over labelled rows only; 0 (keeping the graph) when none is labelled.

    ``F.cross_entropy(..., reduction="mean")`` returns NaN when every label is ignored, which
    would stop training on any batch without, say, an echo image.
    """
    valid = labels != ignore_index
    total = F.cross_entropy(logits.float(), labels, ignore_index=ignore_index, reduction="sum")
    return total / valid.sum().clamp(min=1)


def group_log_softmax(scores: Tensor, group: Tensor, n_groups: int) -> Tensor:
    """Log-softmax of ``scores`` (B, K) within each group: ``group`` (K,) gives each class's group.

    ``out[b, k] = scores[b, k] - logsumexp(scores[b, j] for j with group[j] == group[k])``.
    """
    scores = scores.float()
    b, k = scores.shape
    idx = group.view(1, k).expand(b, k)
    gmax = torch.full((b, n_groups), float("-inf"), device=scores.device, dtype=scores.dtype)
    gmax = gmax.scatter_reduce(1, idx, scores.detach(), reduce="amax", include_self=True)
    shift = gmax.gather(1, idx)
    sums = torch.zeros(b, n_groups, device=scores.device, dtype=scores.dtype)
    sums = sums.scatter_add(1, idx, (scores - shift).exp())
    lse = shift + sums.gather(1, idx).log()
    return scores - lse


def hierarchical_organ_log_probs(organ_scores: Tensor, region_logits: Tensor, organ_region: Tensor) -> Tensor:
    """Joint ``log P(organ) = log P(region(organ)) + log P(organ | region(organ))``, (B, n_organs).

    The rows are proper log-distributions over organs, consistent with the region head.
    """
    n_regions = region_logits.shape[-1]
    within = group_log_softmax(organ_scores, organ_region, n_regions)
    return F.log_softmax(region_logits.float(), dim=-1)[:, organ_region] + within


def conditional_organ_loss(
    organ_scores: Tensor, organ_labels: Tensor, organ_region: Tensor, n_regions: int
) -> Tensor:
    """Cross-entropy of ``P(organ | true region)`` over labelled rows (0 when none is labelled).

    The true region is the region of the true organ (labels are made consistent upstream).
    """
    within = group_log_softmax(organ_scores, organ_region, n_regions)
    valid = organ_labels != IGNORE_INDEX
    picked = within.gather(1, organ_labels.clamp(min=0).unsqueeze(1)).squeeze(1)
    return -(picked * valid.to(picked.dtype)).sum() / valid.sum().clamp(min=1)
