"""Shared fixtures: a small simulated dataset and two tiny untrained models saved as model dirs."""

from __future__ import annotations

from typing import Any

import pytest

from tests.tiny_models import tiny_dual_encoder

TINY: dict[str, Any] = tiny_dual_encoder(
    "eval-test", image={"mean": [0.4], "std": [0.3], "num_hidden_layers": 2}, text={"max_length": 48}
)


@pytest.fixture(scope="session")
def sim_data(tmp_path_factory):
    """160 images over the seven core regions, 64 px, half of the patients in val/test."""
    from sonofm.sim.generator import simulate_dataset

    out = tmp_path_factory.mktemp("evaldata") / "data"
    simulate_dataset(
        out,
        160,
        size=64,
        seed=3,
        splits=(0.5, 0.25, 0.25),
        progress=False,
        regions="breast,gynaecology,heart,kidney,liver,thyroid,vessel",
    )
    return out


def _save(tmp_path_factory, seed: int, name: str):
    import torch

    from sonofm.models import build_model, save_model

    torch.manual_seed(seed)
    model = build_model(TINY).eval()
    return save_model(model, tmp_path_factory.mktemp(name) / "model")


@pytest.fixture(scope="session")
def model_a(tmp_path_factory):
    return _save(tmp_path_factory, 0, "model_a")


@pytest.fixture(scope="session")
def model_b(tmp_path_factory):
    return _save(tmp_path_factory, 1, "model_b")
