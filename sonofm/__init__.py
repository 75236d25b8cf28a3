"""sonofm: ultrasound vision-language foundation models.

Simulate or ingest ultrasound data, pretrain and adapt image-text models, evaluate them on one
suite, and serve them. Heavy submodules (torch) are imported lazily so that `sonofm.taxonomy`
and `sonofm.reports` stay usable without torch.
"""

from __future__ import annotations

from typing import Any

from sonofm._version import __version__

__all__ = ["__version__", "load_model"]


def load_model(path_or_id: str, **kwargs: Any) -> Any:
    """Load any sonofm model directory (local path or `hf-hub:owner/name`)."""
    from sonofm.models.io import load_model as _load_model  # lazy: `import sonofm` must not import torch

    return _load_model(path_or_id, **kwargs)
