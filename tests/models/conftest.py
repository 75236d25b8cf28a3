"""Tiny model configs shared by the model tests (fast: tiny towers, small images)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.tiny_models import TINY_BERT

# tests/tiny_models.py's 1-layer BERT (MiniLM's real tokenizer) without dropout.
TINY_TEXT: dict[str, Any] = TINY_BERT | {
    "hidden_dropout_prob": 0.0,  # deterministic train-mode outputs
    "attention_probs_dropout_prob": 0.0,
}

_PYRAMID_64 = [(8, 16, 16), (16, 8, 8), (32, 4, 4), (64, 2, 2)]  # 4 stages at 64 px
_CONVNEXT = ({"hidden_sizes": [8, 16, 32, 64], "depths": [1, 1, 1, 1]}, 64, _PYRAMID_64)
_SWIN = (
    {"patch_size": 4, "embed_dim": 8, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1], "window_size": 2},
    64,
    _PYRAMID_64,
)

# kind -> (architecture kwargs, image size, expected feature-map shapes (C, H, W))
TINY_IMAGE: dict[str, tuple[dict[str, Any], int, list[tuple[int, int, int]]]] = {
    "vit": (
        {
            "patch_size": 8,
            "hidden_size": 32,
            "num_hidden_layers": 4,
            "num_attention_heads": 2,
            "intermediate_size": 64,
        },
        32,
        [(32, 4, 4)] * 4,
    ),
    "dinov2": (
        {
            "patch_size": 8,
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "mlp_ratio": 2,
        },
        32,
        [(32, 4, 4)] * 4,
    ),
    "convnext": _CONVNEXT,
    "convnextv2": _CONVNEXT,
    "swin": _SWIN,
    "swinv2": _SWIN,
    "monai_swin": (
        {
            "patch_size": 2,
            "embed_dim": 8,
            "depths": [1, 1, 1, 1],
            "num_heads": [1, 1, 1, 1],
            "window_size": 4,
        },
        64,
        [(8, 32, 32), (16, 16, 16), (32, 8, 8), (64, 4, 4), (128, 2, 2)],
    ),
}


def tiny_spec(kind: str = "vit", in_chans: int = 1, **top: Any) -> dict[str, Any]:
    arch, size, _ = TINY_IMAGE[kind]
    image = {
        "kind": kind,
        "image_size": size,
        "in_chans": in_chans,
        "mean": [0.4] * in_chans,
        "std": [0.3] * in_chans,
        **arch,
    }
    return {"name": f"test-{kind}", "embed_dim": 16, "image": image, "text": dict(TINY_TEXT), **top}


@pytest.fixture(scope="session")
def tiny_vit_model():
    import torch

    from sonofm.models import build_model

    torch.manual_seed(0)
    return build_model(tiny_spec("vit")).eval()
