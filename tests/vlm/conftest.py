"""Shared fixtures for the VLM tests: one small simulated dataset per session (32 px)."""

from __future__ import annotations

import pytest

from tests.tiny_models import tiny_vlm

# A tiny VLM (ViT 32 px / width 32, Qwen2 width 64 x 2 layers) used by the data/train tests.
TINY_VLM = tiny_vlm()


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
