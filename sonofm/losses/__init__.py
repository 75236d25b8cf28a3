"""Training losses. Each returns a dict of named terms; the trainer sums and logs them.

The contrastive losses import eagerly (every job needs them); the ultrasound-aware objectives
(docs/methods.md sections 1-2) and the composer load on first access, so `import sonofm.losses`
stays cheap. Wiring them into the pretraining job (model, step, collate) is
`sonofm.pretrain.objective`'s: losses read no dataset and build no model.
"""

from __future__ import annotations

from sonofm.lazy import lazy_exports, lazy_names
from sonofm.losses.contrastive import ClipLoss, SigLipLoss, build_contrastive_loss
from sonofm.losses.distributed import dist_info, gather_features, gather_tensor

_LAZY = {
    "sonofm.losses.semantic": (
        "SemanticLoss",
        "SoftClipLoss",
        "TagVocabulary",
        "semantic_loss",
        "semantic_targets",
        "soft_clip_loss",
        "tag_similarity_matrices",
    ),
    "sonofm.losses.view": ("ViewNCELoss", "view_nce_loss", "multi_positive_nce"),
    "sonofm.losses.negation": ("NegationNCELoss", "negation_nce_loss"),
    "sonofm.losses.compose": (
        "CompositeLoss",
        "LossSpec",
        "parse_loss_spec",
        "build_composite_loss",
    ),
}

__all__ = [  # the lazy names resolve through __getattr__
    "ClipLoss",
    "SigLipLoss",
    "build_contrastive_loss",
    "dist_info",
    "gather_features",
    "gather_tensor",
    *lazy_names(_LAZY),
]
__getattr__, __dir__ = lazy_exports(__name__, _LAZY, cache=True)
