"""Self-supervised image pretraining (EchoCare-style), the job behind ``sonofm ssl``.

Images alone in (no reports needed), an image-tower model directory out: ``job`` trains masked
image modelling plus hierarchical region/organ/view classification with the shared training loop
(:mod:`sonofm.train`); the tower then initialises ``pretrain`` or ``finetune`` through
``image.pretrained=RUN/model``. Names are imported lazily, so importing the package does not
import torch.
"""

from __future__ import annotations

from sonofm.lazy import lazy_exports, lazy_names

_LAZY = {
    "sonofm.ssl.job": ("ssl_pretrain", "SSLConfig", "SSLResult", "evaluate_ssl"),
}
__all__ = lazy_names(_LAZY)
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
