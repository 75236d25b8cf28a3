"""The learning recipe end to end: captions, measured normalisation, supervised heads, text cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from sonofm.config import PretrainConfig, resolve_config
from sonofm.errors import UserError
from tests.tiny_models import tiny_dual_encoder


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sonofm.sim.generator import simulate_dataset

    out = tmp_path_factory.mktemp("recipe") / "data"
    simulate_dataset(
        out,
        48,
        size=32,
        seed=5,
        splits=(0.7, 0.15, 0.15),
        progress=False,
        regions="breast,heart,liver,thyroid",
    )
    return out


def test_model_file_override_is_the_base_of_field_overrides(tmp_path: Path) -> None:
    spec = tmp_path / "m.yaml"
    spec.write_text(yaml.safe_dump(tiny_dual_encoder("file-spec")))
    config = resolve_config(
        PretrainConfig, preset="tiny", overrides=[f"model={spec}", "model.image.patch_size=4"]
    )
    assert config.model["name"] == "file-spec" and config.model["image"]["patch_size"] == 4


def test_pretrain_with_the_recipe_stores_data_statistics_and_heads(sim: Path, tmp_path: Path) -> None:
    from sonofm.models import load_model
    from sonofm.pretrain.job import pretrain

    model = tiny_dual_encoder("recipe", text={"freeze_layers": -1, "cache": 1000})
    config = resolve_config(
        PretrainConfig,
        values={
            "model": model,
            "loss": {"name": "clip+supervised"},
            "data": {"path": str(sim), "text": "caption", "normalize": "data"},
            "train": {"epochs": 1, "batch_size": 8, "workers": 0, "progress": False, "log_every": 1},
        },
    )
    run = pretrain(config, tmp_path / "run")
    saved = json.loads((run.model_dir / "config.json").read_text())["config"]
    # statistics recomputed independently from the training PNGs (32 px: no resizing)
    df = pd.read_parquet(sim / "manifest.parquet")
    pixels = np.concatenate(
        [
            np.asarray(Image.open(sim / p), dtype=np.float64).ravel() / 255
            for p in df[df.split == "train"].image
        ]
    )
    assert saved["image"]["mean"][0] == pytest.approx(pixels.mean(), abs=1e-3)
    assert saved["image"]["std"][0] == pytest.approx(pixels.std(), abs=1e-3)
    assert saved["heads"]["region"] == sorted(df.region.unique())
    rows = [json.loads(x) for x in (run.metrics).read_text().splitlines()]
    assert any("supervised_loss" in r for r in rows)
    loaded = load_model(run.model_dir)
    import torch

    logits = loaded.head_logits(
        torch.nn.functional.normalize(torch.randn(3, loaded.config.embed_dim), dim=-1)
    )
    assert logits["head/region"].shape == (3, len(saved["heads"]["region"]))


def test_statistics_and_head_classes_read_shards_like_the_folder(sim: Path, tmp_path: Path) -> None:
    from sonofm.data.loader import manifest_rows
    from sonofm.data.shards import export_shards
    from sonofm.data.stats import image_mean_std
    from sonofm.losses.supervised import head_classes

    shards = tmp_path / "shards"
    export_shards(sim, shards)
    folder = image_mean_std(sim, image_size=32, limit=10_000)
    stream = image_mean_std(shards, image_size=32, limit=10_000)
    assert stream == pytest.approx(folder, abs=1e-6)  # every train image either way
    assert head_classes(manifest_rows(shards)) == head_classes(manifest_rows(sim))


def test_pretrain_encodes_captions_and_hard_negatives_before_step_one(
    sim: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a frozen cached text tower no training or validation step encodes text: the run's
    captions and its caption hard negatives are all encoded in the warm-up pass."""
    from sonofm.models.text_towers import TextTower
    from sonofm.pretrain.job import pretrain

    warming = [False]
    outside: list[int] = []
    warmed: list[int] = []
    original_warm, original_encode = TextTower.warm_cache, TextTower._encode

    def warm(self, rows, batch_size=128):
        warming[0] = True
        try:
            warmed.append(original_warm(self, rows, batch_size))
            return warmed[-1]
        finally:
            warming[0] = False

    def encode(self, ids, mask):
        if not warming[0]:
            outside.append(ids.shape[0])
        return original_encode(self, ids, mask)

    monkeypatch.setattr(TextTower, "warm_cache", warm)
    monkeypatch.setattr(TextTower, "_encode", encode)
    model = tiny_dual_encoder("warm", text={"freeze_layers": -1, "cache": 10_000})
    config = resolve_config(
        PretrainConfig,
        values={
            "model": model,
            "loss": {"name": "clip+negation"},
            # sampled single-finding captions too: the sampler lists its variants for the warm-up
            "data": {"path": str(sim), "text": "caption", "caption_sampling": 0.5},
            "train": {"epochs": 2, "batch_size": 8, "workers": 0, "progress": False},
        },
    )
    run = pretrain(config, tmp_path / "run")
    assert warmed and warmed[0] > 0
    assert outside == []
    losses = [json.loads(x) for x in run.metrics.read_text().splitlines()]
    assert any("negation_loss" in r for r in losses)


def test_caption_sampling_needs_captions(sim: Path, tmp_path: Path) -> None:
    from sonofm.errors import UserError
    from sonofm.pretrain.job import pretrain

    config = resolve_config(
        PretrainConfig,
        values={
            "model": tiny_dual_encoder("sampling"),
            "data": {"path": str(sim), "text": "report", "caption_sampling": 0.5},
            "train": {"epochs": 1, "batch_size": 8, "workers": 0, "progress": False},
        },
    )
    with pytest.raises(UserError, match="caption_sampling=0.5 needs data.text=caption"):
        pretrain(config, tmp_path / "run")


@pytest.mark.parametrize("loss", ["clip+label_text", "soft_clip+graph+negation+label_text:0.5"])
def test_pretrain_with_label_texts_logs_their_term(sim: Path, tmp_path: Path, loss: str) -> None:
    """The label texts go through the (graph-wrapped, cached) text tower every step and their
    term is logged apart; the caption and label-text terms both train the model."""
    from sonofm.pretrain.job import pretrain

    model = tiny_dual_encoder("label-text", text={"freeze_layers": -1, "cache": 1000})
    config = resolve_config(
        PretrainConfig,
        values={
            "model": model,
            "loss": {"name": loss, "label_text_groups": ["organ", "view", "echogenicity"]},
            "data": {"path": str(sim), "text": "caption"},
            "train": {"epochs": 2, "batch_size": 8, "workers": 0, "progress": False, "log_every": 1},
        },
    )
    run = pretrain(config, tmp_path / "run")
    rows = [json.loads(x) for x in run.metrics.read_text().splitlines()]
    values = [r["label_text_loss"] for r in rows if "label_text_loss" in r]
    assert len(values) >= 4 and all(np.isfinite(values)) and all(v > 0 for v in values)
    weight = 0.5 if loss.endswith(":0.5") else 1.0
    # 3 groups (organ 18, view 8, echogenicity 6 texts): an untrained model is near the uniform
    # cross-entropy, weighted
    uniform = weight * np.mean([np.log(18), np.log(8), np.log(6)])
    assert values[0] == pytest.approx(uniform, rel=0.5)


def test_label_text_groups_are_checked_with_the_config(sim: Path) -> None:
    values = {
        "model": tiny_dual_encoder("label-text-bad"),
        "loss": {"name": "clip+label_text", "label_text_groups": ["organ", "colour"]},
        "data": {"path": str(sim), "text": "caption"},
    }
    with pytest.raises(UserError, match=r"label_text_groups \['colour'\]"):
        resolve_config(PretrainConfig, values=values)
    values["loss"]["name"] = "clip"  # the groups only matter to the term that reads them
    resolve_config(PretrainConfig, values=values)
