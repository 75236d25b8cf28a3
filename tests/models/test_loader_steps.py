"""The two steps every model-type loader shares (models/io.py): the validated config section and
the strict weight load."""

from pathlib import Path

import pytest
import torch
from pydantic import BaseModel
from torch import nn

from sonofm.errors import UserError
from sonofm.models.io import save_model, validated_config, with_weights


class _Tower(BaseModel):
    arch: dict | None = None


class _Config(BaseModel):
    image: _Tower = _Tower()
    lm_arch: dict | None = None
    width: int = 4


def test_validated_config_names_the_file_and_the_required_fields(tmp_path: Path) -> None:
    section = {"config": {"image": {"arch": {}}, "lm_arch": {}}}
    cfg = validated_config(_Config, tmp_path, section, "image.arch")
    assert cfg.image.arch == {} and cfg.width == 4
    with pytest.raises(UserError, match=r"config\.json: config\.image\.arch / config\.lm_arch missing"):
        validated_config(_Config, tmp_path, {"config": {"image": {"arch": {}}}}, "image.arch", "lm_arch")
    with pytest.raises(UserError, match=r"config\.json: invalid 'config'"):
        validated_config(_Config, tmp_path, {"config": {"width": "wide"}})


class _Tiny(nn.Module):
    model_type = "tiny_test_model"

    def __init__(self) -> None:
        super().__init__()
        self.config = _Config()
        self.lin = nn.Linear(2, 2)


def test_with_weights_loads_strictly(tmp_path: Path) -> None:
    saved = _Tiny()
    save_model(saved, tmp_path / "m")
    loaded = with_weights(_Tiny(), tmp_path / "m")
    assert torch.equal(loaded.lin.weight, saved.lin.weight)
    other = _Tiny()
    other.extra = nn.Linear(1, 1)
    with pytest.raises(UserError):
        with_weights(other, tmp_path / "m")
