"""Shared fixtures for the VLM tests: one small simulated dataset per session (32 px)."""

from __future__ import annotations

import copy

import pytest

from tests.tiny_models import TINY_VIT

# A tiny VLM (ViT 32 px / width 32, Qwen2 width 64 x 2 layers) used by the data/train tests.
TINY_VLM = {
    "name": "unit",
    "image": copy.deepcopy(TINY_VIT),
    "lm": {
        "model_type": "qwen2",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
        "tie_word_embeddings": True,
    },
    "moe": {"num_experts": 4, "top_k": 2},
    "num_image_tokens": 4,
    "max_length": 320,
    "vocab_size": 600,
}


@pytest.fixture(scope="session")
def sim_dir(tmp_path_factory):
    """40 simulated images (breast, thyroid, heart) at 32 px."""
    from sonofm.sim.generator import simulate_dataset

    out = tmp_path_factory.mktemp("vlm_sim") / "data"
    return simulate_dataset(out, 40, regions=["breast", "thyroid", "heart"], size=32, seed=3, progress=False)


@pytest.fixture(scope="session")
def lesion_dir(tmp_path_factory):
    """24 simulated lesion images (breast, thyroid) at 32 px: short reports for training tests."""
    from sonofm.sim.generator import simulate_dataset

    out = tmp_path_factory.mktemp("vlm_lesion") / "data"
    return simulate_dataset(out, 24, regions=["breast", "thyroid"], size=32, seed=5, progress=False)
