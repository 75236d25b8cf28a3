"""Training losses. Each returns a dict of named terms; the trainer sums and logs them.

The contrastive losses import eagerly (every job needs them); the ultrasound-aware objectives
(docs/methods.md sections 1-2) and the composer load on first access, so `import sonofm.losses`
stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from sonofm.losses.contrastive import ClipLoss, SigLipLoss, build_contrastive_loss
from sonofm.losses.distributed import dist_info, gather_features, gather_tensor

_LAZY = {
    "SemanticLoss": "sonofm.losses.semantic",
    "SoftClipLoss": "sonofm.losses.semantic",
    "TagVocabulary": "sonofm.losses.semantic",
    "semantic_loss": "sonofm.losses.semantic",
    "semantic_targets": "sonofm.losses.semantic",
    "soft_clip_loss": "sonofm.losses.semantic",
    "tag_similarity_matrices": "sonofm.losses.semantic",
    "ViewNCELoss": "sonofm.losses.view",
    "view_nce_loss": "sonofm.losses.view",
    "multi_positive_nce": "sonofm.losses.view",
    "NegationNCELoss": "sonofm.losses.negation",
    "negation_nce_loss": "sonofm.losses.negation",
    "CompositeLoss": "sonofm.losses.compose",
    "LossSpec": "sonofm.losses.compose",
    "parse_loss_spec": "sonofm.losses.compose",
    "build_composite_loss": "sonofm.losses.compose",
    "build_objective": "sonofm.losses.compose",
}

__all__ = [  # the lazy names resolve through __getattr__
    "ClipLoss",
    "SigLipLoss",
    "build_contrastive_loss",
    "dist_info",
    "gather_features",
    "gather_tensor",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sonofm.losses' has no attribute {name!r}")
