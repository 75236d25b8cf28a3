"""Models: image/text towers, the dual encoder, presets and model-directory save/load.

Names are imported lazily (PEP 562) so `import sonofm.models` stays cheap for sibling modules.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DualEncoder": "sonofm.models.dual_encoder",
    "DualEncoderConfig": "sonofm.models.config",
    "ImageTowerConfig": "sonofm.models.config",
    "TextTowerConfig": "sonofm.models.config",
    "ImageTower": "sonofm.models.image_towers",
    "TextTower": "sonofm.models.text_towers",
    "TextTokenizer": "sonofm.models.text_towers",
    "build_model": "sonofm.models.factory",
    "resolve_config": "sonofm.models.factory",
    "list_presets": "sonofm.models.factory",
    "save_model": "sonofm.models.io",
    "load_model": "sonofm.models.io",
    "load_image_tower": "sonofm.models.io",
    "load_weights": "sonofm.models.io",
    "register_model_type": "sonofm.models.io",
    "SonoVLM": "sonofm.models.vlm",
    "VLMConfig": "sonofm.models.vlm",
    "build_vlm": "sonofm.models.vlm",
    "load_vlm": "sonofm.models.vlm",
    "MoEConfig": "sonofm.models.moe",
    "DualPathMoE": "sonofm.models.moe",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sonofm.models' has no attribute {name!r}")
