"""`sonofm ssl` end to end on a small simulated dataset: the loss goes down, the model dir is a
usable image tower, resume continues the same run exactly, and the CLI reports errors in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sonofm.config import resolve_config
from sonofm.errors import UserError
from sonofm.models import load_image_tower, load_model
from sonofm.models.ssl import SSLModel
from sonofm.ssl.job import SSLCollate, SSLConfig, _dataset, build_model_config, ssl_pretrain

# A 32 px, 1-block ViT of width 32 on top of the tiny SSL preset.
TINY = [
    "image.image_size=32",
    "image.patch_size=8",
    "image.hidden_size=32",
    "image.num_hidden_layers=1",
    "image.num_attention_heads=2",
    "image.intermediate_size=64",
    "mask_patch=8",
    "train.batch_size=16",
    "train.workers=0",
    "train.progress=false",
    "train.log_every=1",
    "train.warmup_steps=2",
    "train.lr=2e-3",
    "data.val_batch_size=64",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sonofm.sim.generator import simulate_dataset

    out = tmp_path_factory.mktemp("ssl") / "data"
    return simulate_dataset(
        out, 80, regions=["breast", "heart", "liver", "thyroid"], size=64, seed=0, progress=False
    )


def config(data: Path, *extra: str) -> SSLConfig:
    return resolve_config(
        SSLConfig, preset="tiny", kind="ssl", overrides=[f"data.path={data}", *TINY, *extra]
    )


@pytest.fixture(scope="module")
def run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[SSLConfig, Path]:
    cfg = config(data, "train.epochs=6")
    out = tmp_path_factory.mktemp("ssl-run") / "run"
    ssl_pretrain(cfg, out)
    return cfg, out


def _fixed_batch_loss(model: SSLModel, cfg: SSLConfig) -> float:
    ds = _dataset(cfg, "train", model.visual.image_size, 0.0)
    n = min(48, len(ds))  # the split's size depends on how the simulator balances patients
    batch = SSLCollate(model.config.regions, model.config.organs, model.config.views)(
        [ds[i] for i in range(n)]
    )
    model.eval()
    with torch.no_grad():
        out = model(batch["image"], model.random_mask(n, generator=torch.Generator().manual_seed(0)))
        labels = {lv: batch[f"label_{lv}"] for lv in ("region", "organ", "view")}
        terms = model.loss_terms(out, labels, cfg.weights.model_dump())
    return float(sum(terms.values()))


def test_training_lowers_the_loss_and_writes_a_model_dir(run: tuple[SSLConfig, Path]) -> None:
    cfg, out = run
    torch.manual_seed(cfg.train.seed)  # the job's initial weights
    before = _fixed_batch_loss(SSLModel(build_model_config(cfg)), cfg)
    model = load_model(out / "model")
    assert isinstance(model, SSLModel)
    after = _fixed_batch_loss(model, cfg)
    assert after < 0.8 * before, (before, after)

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "mim_loss" in r]
    assert {"loss", "mim_loss", "region_loss", "organ_loss", "view_loss", "lr"} <= set(steps[0])
    vals = [r for r in records if "val/mim_loss" in r]
    assert len(vals) == 6 and "val/region_acc" in vals[-1]

    cfg_json = json.loads((out / "model" / "config.json").read_text())
    assert cfg_json["model_type"] == "ssl_image_model"
    training = json.loads((out / "model" / "training.json").read_text())
    assert training["job"] == "ssl" and training["steps"] == steps[-1]["step"]
    assert training["labelled_rows"]["region"] > training["labelled_rows"]["view"] > 0

    tower = load_image_tower(out / "model")
    ref = model.visual.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in tower.state_dict().items())


def test_resume_continues_the_same_run_exactly(data: Path, tmp_path: Path) -> None:
    # At batch 20 the training split fills at most 3 steps per epoch, and with 2 warmup steps the
    # first epoch's learning rates do not depend on how many epochs the run plans, so stopping
    # after one epoch and resuming must give the uninterrupted run bit for bit.
    full = config(data, "train.epochs=2", "train.batch_size=20")
    ssl_pretrain(full, tmp_path / "full")
    ssl_pretrain(config(data, "train.epochs=1", "train.batch_size=20"), tmp_path / "split")
    ssl_pretrain(full, tmp_path / "split", resume="latest")
    a = load_model(tmp_path / "full" / "model").state_dict()
    b = load_model(tmp_path / "split" / "model").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_ssl_run_can_start_from_another_model_dir(run: tuple[SSLConfig, Path], data: Path) -> None:
    _, out = run
    cfg = config(data, f"model={out / 'model'}")
    mc = build_model_config(cfg)
    assert mc.image.pretrained == str(out / "model") and mc.image.kind == "vit"
    model = SSLModel(mc)
    ref = load_image_tower(out / "model").state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in model.visual.state_dict().items())


def test_bad_settings_are_user_errors(data: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown image.hidden_sise"):
        build_model_config(config(data, "image.hidden_sise=3"))
    with pytest.raises(UserError, match="mask_ratio"):
        config(data, "mask_ratio=1.5")
    with pytest.raises(UserError, match="no such dataset"):
        ssl_pretrain(config(tmp_path / "nope"), tmp_path / "out")


def test_cli_runs_and_reports(data: Path, tmp_path: Path) -> None:
    from sonofm.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["ssl", "--help"])
    assert res.exit_code == 0 and "Examples" in res.output
    args = ["ssl", "--data", str(data), "--out", str(tmp_path / "cli"), "--epochs", "1", *TINY]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "cli" / "model" / "model.safetensors").is_file()
    assert (tmp_path / "cli" / "config.yaml").is_file()
    res = runner.invoke(app, [*args, "weights.view=-1"])  # main() prints UserErrors as one line, exit 2
    assert isinstance(res.exception, UserError) and "weights.view" in str(res.exception)


def test_ssl_datasets_keep_decoded_images_unless_told_not_to(data: Path) -> None:
    """Every SSL epoch reads every image again: the job's datasets use the decoded-image cache
    (data.image_cache_mb), and 0 turns it off."""
    assert _dataset(config(data), "train", 32, 0.0).image_cache is not None
    assert _dataset(config(data, "data.image_cache_mb=0"), "train", 32, 0.0).image_cache is None
