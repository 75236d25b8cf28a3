"""Models: image/text towers, the dual encoder, presets and model-directory save/load.

Names are imported lazily (PEP 562) so `import sonofm.models` stays cheap for sibling modules.
"""

from __future__ import annotations

from sonofm.lazy import lazy_exports, lazy_names

_LAZY = {
    "sonofm.models.dual_encoder": ("DualEncoder",),
    "sonofm.models.config": ("DualEncoderConfig", "ImageTowerConfig", "TextTowerConfig"),
    "sonofm.models.image_towers": ("ImageTower",),
    "sonofm.models.text_towers": ("TextTower", "TextTokenizer"),
    "sonofm.models.factory": ("build_model", "resolve_config", "list_presets"),
    "sonofm.models.io": (
        "save_model",
        "load_model",
        "load_image_tower",
        "load_weights",
        "register_model_type",
    ),
    "sonofm.models.vlm": ("SonoVLM", "VLMConfig", "build_vlm", "load_vlm"),
    "sonofm.models.moe": ("MoEConfig", "DualPathMoE"),
}
__all__ = lazy_names(_LAZY)
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
