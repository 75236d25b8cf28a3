"""Training losses. Each returns a dict of named terms; the trainer sums and logs them."""

from __future__ import annotations

from sonofm.losses.contrastive import ClipLoss, SigLipLoss, build_contrastive_loss
from sonofm.losses.distributed import dist_info, gather_features, gather_tensor

__all__ = [
    "ClipLoss",
    "SigLipLoss",
    "build_contrastive_loss",
    "dist_info",
    "gather_features",
    "gather_tensor",
]
