"""Shared fixtures of the fine-tuning tests: tiny towers and small simulated data sets."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiny_models import TINY_VIT

# A ViT small enough for a loaded 2-core CPU: 32 px, patch 8 (4x4 grid), width 32, 2 blocks.
TINY_IMAGE = TINY_VIT | {"num_hidden_layers": 2}
TINY_OVERRIDES = [
    f"image.{k}={v}" for k, v in TINY_IMAGE.items() if k not in ("kind", "mean", "std", "in_chans")
]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """One intra-op thread for every fine-tuning test (tests/conftest.py)."""


def _simulate(out: Path, regions: str, n: int, seed: int) -> Path:
    from sonofm.sim.generator import simulate_dataset

    simulate_dataset(
        out, n=n, regions=regions.split(","), size=64, seed=seed, splits=(0.6, 0.2, 0.2), progress=False
    )
    return out


@pytest.fixture(scope="session")
def breast_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~60 breast images (lesion masks), splits 60/20/20 by patient."""
    return _simulate(tmp_path_factory.mktemp("ft-breast") / "data", "breast", 60, 0)


@pytest.fixture(scope="session")
def heart_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~60 echo images (views, chamber masks), splits 60/20/20 by patient."""
    return _simulate(tmp_path_factory.mktemp("ft-heart") / "data", "heart", 60, 1)
