"""Training from WebDataset shards: the same losses as the folder on the same order, exact
mid-epoch resume, and `sonofm pretrain --data SHARDS` end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from sonofm.config import TrainerConfig
from sonofm.data.loader import build_loader
from sonofm.data.shards import ShardDataset, export_shards
from sonofm.losses import ClipLoss
from sonofm.train import ContrastiveStep, Trainer
from tests.data.test_shards_stream import make_dataset
from tests.tiny_models import TINY_DUAL_ENCODER


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = make_dataset(tmp_path_factory.mktemp("folder") / "d", n=30)
    shards = tmp_path_factory.mktemp("shards") / "s"
    export_shards(root, shards, shard_size=7)
    return root, shards


def _model() -> Any:
    from sonofm.models import build_model

    torch.manual_seed(0)
    return build_model(TINY_DUAL_ENCODER, load_pretrained=False)


def _trainer(data: Path, out: Path, *, shuffle: bool, stop_at: int | None = None, **cfg: Any) -> Trainer:
    model = _model()
    loader = build_loader(
        data, "train", 4, image_size=32, tokenizer=model.get_tokenizer(), augment=0.5, shuffle=shuffle, seed=7
    )
    if isinstance(loader.dataset, ShardDataset):
        loader.dataset.shuffle_buffer = 5
    config = TrainerConfig(
        **{
            "epochs": 2,
            "batch_size": 4,
            "lr": 1e-3,
            "warmup_steps": 2,
            "log_every": 1,
            "seed": 7,
            "progress": False,
            "device": "cpu",
            "val_every": 0,
            **cfg,
        }
    )

    def crash(trainer: Trainer, record: dict) -> None:
        if stop_at is not None and trainer.step == stop_at:
            raise KeyboardInterrupt  # after the checkpoint of the step before

    trainer = Trainer(model, ContrastiveStep(ClipLoss()), config, out, loader, on_step=[crash])
    if trainer.sampler is not None:
        trainer.sampler.shuffle = shuffle
    return trainer


def _losses(run: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]


def test_shards_and_folder_train_to_the_same_losses(data, tmp_path: Path) -> None:
    root, shards = data
    folder = _trainer(root, tmp_path / "folder", shuffle=False)
    streamed = _trainer(shards, tmp_path / "shards", shuffle=False)
    assert streamed.streaming and folder.steps_per_epoch == streamed.steps_per_epoch == 8  # 30 -> 32
    folder.fit()
    streamed.fit()
    a, b = _losses(tmp_path / "folder"), _losses(tmp_path / "shards")
    assert len(a) == 16 and a == b
    for name, p in folder.raw_model.state_dict().items():
        assert torch.equal(p, streamed.raw_model.state_dict()[name]), name


def test_shard_run_resumes_mid_epoch_exactly(data, tmp_path: Path) -> None:
    _, shards = data
    full = _trainer(shards, tmp_path / "full", shuffle=True, checkpoint_every=1)
    full.fit()
    with pytest.raises(KeyboardInterrupt):
        _trainer(shards, tmp_path / "split", shuffle=True, checkpoint_every=1, stop_at=12).fit()
    state = torch.load(tmp_path / "split" / "checkpoints" / "latest.pt", weights_only=False)
    assert (state["step"], state["epoch"], state["batch_in_epoch"], state["sample_in_epoch"]) == (
        11,
        1,
        3,
        12,
    )
    resumed = _trainer(shards, tmp_path / "split", shuffle=True, checkpoint_every=1)
    resumed.fit(resume="latest")
    assert _losses(tmp_path / "full")[11:] == _losses(tmp_path / "split")[-5:]
    for name, p in full.raw_model.state_dict().items():
        assert torch.equal(p, resumed.raw_model.state_dict()[name]), name


def test_pretrain_cli_streams_shards(data, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sonofm.cli import app

    _, shards = data
    model_yaml = tmp_path / "tiny.yaml"
    model_yaml.write_text(yaml.safe_dump(TINY_DUAL_ENCODER))
    run = tmp_path / "run"
    args = ["pretrain", "--data", str(shards), "--out", str(run), "--epochs", "1", "--batch-size", "8"]
    args += [f"model={model_yaml}", "train.progress=false", "train.warmup_steps=1", "data.val_batch_size=4"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    training = json.loads((run / "model" / "training.json").read_text())
    dist = training["distributed"]
    assert dist["world_size"] == 1 and dist["streaming"] and dist["global_batch"] == 8
    assert dist["epoch_plan"]["padded"] == 2 and dist["epoch_plan"]["dropped"] == 0  # 30 -> 4 x 8
    assert any("val/r_mean" in x for x in (run / "metrics.jsonl").read_text().splitlines())


def test_ssl_streams_shards_through_loader_workers(data, tmp_path: Path) -> None:
    from sonofm.config import resolve_config
    from sonofm.ssl.job import SSLConfig, ssl_pretrain
    from tests.ssl.test_job import TINY

    _, shards = data
    overrides = [f"data.path={shards}", *TINY, "train.workers=2", "train.batch_size=8", "train.epochs=2"]
    config = resolve_config(SSLConfig, preset="tiny", kind="ssl", overrides=overrides)
    ssl_pretrain(config, tmp_path / "ssl")
    training = json.loads((tmp_path / "ssl" / "model" / "training.json").read_text())
    assert training["distributed"]["streaming"] and training["steps"] == 8  # 30 -> 4 steps of 8, 2 epochs
    assert training["distributed"]["epoch_plan"]["padded"] == 2
