"""Contrastive image-text pretraining, the job behind ``sonofm pretrain``.

A dataset directory (or shards) in, a dual-encoder model directory out: ``job`` builds the model,
loaders and loss and runs the shared training loop (:mod:`sonofm.train`), validating with
image<->text retrieval each epoch; ``objective`` turns a ``--loss`` spec (``clip``, ``siglip``,
``usclip``, ``clip+supervised``, ...) into the model wrapper, train step and collate its loss terms
need. Names are imported lazily, so importing the package does not import torch.
"""

from __future__ import annotations

from sonofm.lazy import lazy_exports, lazy_names

_LAZY = {
    "sonofm.pretrain.job": ("pretrain", "PretrainResult", "retrieval_recall"),
    "sonofm.pretrain.objective": ("build_objective", "Objective", "ObjectiveCollate", "ObjectiveStep"),
}
__all__ = lazy_names(_LAZY)
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
