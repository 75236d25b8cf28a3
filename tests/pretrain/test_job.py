"""`sonofm pretrain` end to end on a small simulated dataset, plus its retrieval metric."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from sonofm.config import PretrainConfig, resolve_config
from sonofm.errors import DataError, UserError
from sonofm.pretrain.job import pretrain, retrieval_recall
from tests.tiny_models import TINY_DUAL_ENCODER

models = pytest.importorskip("sonofm.models.factory", reason="sonofm.models is not importable yet")

TINY_MODEL = TINY_DUAL_ENCODER


def test_retrieval_recall_matches_bruteforce() -> None:
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(12, 4, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(img + 0.8 * torch.randn(12, 4, generator=g), dim=-1)
    got = retrieval_recall(img, txt, ks=(1, 3))
    sims = (img @ txt.T).tolist()
    for k in (1, 3):
        i2t = sum(sorted(range(12), key=lambda j: -sims[i][j]).index(i) < k for i in range(12)) / 12
        t2i = sum(sorted(range(12), key=lambda j: -sims[j][i]).index(i) < k for i in range(12)) / 12
        assert got[f"val/i2t_r{k}"] == pytest.approx(i2t)
        assert got[f"val/t2i_r{k}"] == pytest.approx(t2i)
    perfect = retrieval_recall(img, img)
    assert perfect["val/i2t_r1"] == perfect["val/t2i_r1"] == perfect["val/r_mean"] == 1.0


SHAPES = ("round", "oval", "irregular", "lobulated")
ECHO = ("anechoic", "hypoechoic", "isoechoic", "hyperechoic")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40-image dataset directory whose reports describe a drawn blob (fast, simulator-free),
    with one corrupt PNG that must be skipped and counted."""
    from PIL import Image

    from sonofm.data.manifest import write_manifest

    out = tmp_path_factory.mktemp("pairs") / "data"
    (out / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    rows = []
    for i in range(40):
        r, level, cx = 6 + (i % 4) * 4, 60 + (i // 4 % 4) * 60, 16 + (i // 16) * 16
        img = rng.normal(90, 20, (64, 64))
        img[(yy - 32) ** 2 + (xx - cx) ** 2 < r * r] = level
        name = f"images/img{i:03d}.png"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(out / name)
        split = "val" if i % 5 == 0 else "train"
        report = f"Findings: a {SHAPES[i % 4]} {ECHO[i // 4 % 4]} nodule, {r * 2} px, at column {cx}."
        rows.append(
            {"id": f"img{i:03d}", "patient_id": f"p{i}", "split": split, "image": name, "report": report}
        )
    (out / "images" / "img001.png").write_bytes(b"\x89PNG broken")  # fails to decode
    write_manifest(rows, out)
    return out


@pytest.fixture(scope="module")
def model_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "test-tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_MODEL))
    return path


def _cli(*args: str) -> Any:
    from sonofm.cli import app

    result = CliRunner().invoke(app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def test_pretrain_cli_writes_a_loadable_run(dataset: Path, model_yaml: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    common = [
        "train.warmup_steps=2",
        "train.log_every=1",
        "train.workers=0",
        "train.progress=false",
        f"model={model_yaml}",
        "data.augment=0.5",
    ]
    res = _cli(
        "pretrain",
        "--data",
        str(dataset),
        "--out",
        str(run),
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--loss",
        "siglip",
        *common,
    )
    assert res.exit_code == 0, res.output
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["loss"]["name"] == "siglip" and config["train"]["batch_size"] == 8
    assert config["data"]["path"] == str(dataset)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert {
        "step",
        "epoch",
        "lr",
        "loss",
        "contrastive_loss",
        "samples_per_s",
        "logit_scale",
        "logit_bias",
    } <= set(rows[0])
    assert [r for r in rows if "loss" in r][-1]["skipped_samples"] == 2  # the broken PNG, once per epoch
    val = [r for r in rows if "val/i2t_r1" in r]
    assert len(val) == 2 and {"val/t2i_r5", "val/i2t_r10", "val/r_mean"} <= set(val[-1])

    import sonofm

    model = sonofm.load_model(str(run / "model"))
    latest = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)
    best = torch.load(
        run / "checkpoints" / "best.pt", weights_only=True
    )  # the preset early-stops on val/r_mean
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, best["model"][name]), name
    assert model.logit_bias is not None  # SigLIP adds the bias to the model
    training = json.loads((run / "model" / "training.json").read_text())
    assert training["job"] == "pretrain" and training["steps"] == latest["step"]
    assert training["skipped_samples"] == 2 and training["weights"].startswith("best val/r_mean")

    # --resume latest continues the saved run (its config.yaml) for more epochs
    res = _cli("pretrain", "--out", str(run), "--resume", "latest", "--epochs", "3")
    assert res.exit_code == 0, res.output
    rows2 = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows2[: len(rows)] == rows and len([r for r in rows2 if "val/i2t_r1" in r]) == 3
    assert torch.load(run / "checkpoints" / "latest.pt", weights_only=True)["epoch"] == 3


def test_dataset_without_text_is_a_clear_error(dataset: Path, model_yaml: Path, tmp_path: Path) -> None:
    df = pd.read_parquet(dataset / "manifest.parquet")
    df["image"] = [str(dataset / p) for p in df["image"]]
    df["mask"] = None
    df["report"] = ""
    manifest = tmp_path / "manifest.jsonl"
    df[["id", "patient_id", "split", "image", "report"]].to_json(manifest, orient="records", lines=True)
    cfg = resolve_config(PretrainConfig, values={"model": str(model_yaml), "data": {"path": str(manifest)}})
    with pytest.raises(DataError, match="no text to train on"):
        pretrain(cfg, tmp_path / "run")
    from sonofm.cli import app

    res = CliRunner().invoke(
        app, ["pretrain", "--data", str(manifest), "--out", str(tmp_path / "r2"), f"model={model_yaml}"]
    )
    assert isinstance(res.exception, DataError)  # main() prints it as one line and exits 2


def test_bad_override_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"train\.lr"):
        resolve_config(PretrainConfig, preset="tiny", overrides=["train.lr=-1"])
    with pytest.raises(UserError, match="unknown train preset 'huge'"):
        resolve_config(PretrainConfig, preset="huge")


@pytest.mark.slow
@pytest.mark.timeout(1800)  # ~300 steps of the tiny preset at batch 64: minutes on 2 idle cores
def test_tiny_preset_overfits_64_pairs(tmp_path: Path) -> None:
    """The tiny preset memorises 64 simulated image-report pairs: R@1 = 1.0 both ways."""
    sim = pytest.importorskip(
        "sonofm.sim.generator", reason="the simulator (sonofm.sim) is not importable yet"
    )
    data = tmp_path / "data"
    sim.simulate_dataset(
        data, 96, size=128, seed=3, regions=["thyroid", "kidney", "liver", "breast"], progress=False
    )
    df = pd.read_parquet(data / "manifest.parquet").drop_duplicates("report").head(64)
    assert len(df) == 64, "need 64 distinct reports"
    df = df.assign(split="train", image=[str(data / p) for p in df["image"]], mask=None)
    manifest = tmp_path / "pairs.jsonl"
    df[["id", "patient_id", "split", "image", "report"]].to_json(manifest, orient="records", lines=True)
    cfg = resolve_config(
        PretrainConfig,
        preset="tiny",
        values={"data": {"path": str(manifest), "val_split": "train", "augment": 0.0}},
        overrides=[
            "train.epochs=300",  # one step per epoch; stops as soon as both R@1 reach 1.0
            "train.batch_size=64",
            "train.lr=1e-3",
            "train.min_lr_ratio=1.0",  # constant after warmup: memorising needs no annealing
            "train.warmup_steps=5",
            "train.workers=0",
            "train.progress=false",
            "train.val_every=5",
            "train.patience=0",
            "train.checkpoint_every=0",
            "train.early_stop_metric=val/r1",
            "train.early_stop_target=1.0",
        ],
    )
    result = pretrain(cfg, tmp_path / "run")
    assert result.fit.stopped_early, f"did not memorise the pairs in 300 steps: {result.fit.last_val}"
    assert result.fit.last_val["val/i2t_r1"] == 1.0
    assert result.fit.last_val["val/t2i_r1"] == 1.0


def test_cli_reports_missing_data_in_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sonofm.cli",
            "pretrain",
            "--data",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    text = " ".join(proc.stderr.split())  # rich wraps long lines
    assert "error: --data" in text and "no such dataset" in text and "Traceback" not in text


def test_grad_checkpointing_gives_the_same_update(model_yaml: Path, tmp_path: Path) -> None:
    from sonofm.config import TrainerConfig
    from sonofm.losses import ClipLoss
    from sonofm.models import build_model
    from sonofm.train import ContrastiveStep, Trainer
    from tests.train.standin import PairData, StandInDual, collate

    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.rand(6, 1, 32, 32, generator=g)}
    weights = {}
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = build_model(str(model_yaml))
        batch.update(model.tokenize([f"report number {i} of a hypoechoic nodule" for i in range(6)]))
        cfg = TrainerConfig(batch_size=6, grad_checkpointing=ckpt, progress=False, device="cpu")
        trainer = Trainer(model, ContrastiveStep(ClipLoss()), cfg, tmp_path / str(ckpt), PairData(8))
        trainer.train_step([dict(batch)])
        weights[ckpt] = {k: v.clone() for k, v in model.state_dict().items()}
    for name in weights[False]:
        torch.testing.assert_close(weights[True][name], weights[False][name], atol=1e-6, rtol=0, msg=name)
    with pytest.raises(UserError, match="no gradient checkpointing switch"):
        Trainer(
            StandInDual(), ContrastiveStep(ClipLoss()), cfg, tmp_path / "x", PairData(8), collate_fn=collate
        )


@pytest.mark.parametrize(
    ("loss", "has_bias"), [("clip", False), ("siglip", True), ("siglip+view", True), ("usclip", False)]
)
def test_siglip_terms_get_a_logit_bias_alone_or_in_a_combination(loss: str, has_bias: bool) -> None:
    from sonofm.pretrain.job import _build_model

    config = resolve_config(PretrainConfig, values={"model": TINY_MODEL, "loss": {"name": loss}})
    model = _build_model(config)
    assert (model.logit_bias is not None) == has_bias


def test_model_overrides_edit_the_named_preset_instead_of_replacing_it() -> None:
    from sonofm.models.factory import load_spec

    overrides = ["model.image.pretrained=/runs/ssl/model", "model.embed_dim=128"]
    config = resolve_config(PretrainConfig, preset="tiny", overrides=overrides)
    tiny = load_spec("tiny")
    assert config.model["image"]["pretrained"] == "/runs/ssl/model"
    assert config.model["embed_dim"] == 128
    # everything else is still the tiny preset (1-channel 128 px ViT, MiniLM text)
    assert {k: v for k, v in config.model["image"].items() if k != "pretrained"} == {
        k: v for k, v in tiny["image"].items() if k != "pretrained"
    }
    assert config.model["text"] == tiny["text"]


def test_group_by_makes_single_group_batches_and_names_a_missing_column(
    dataset: Path, model_yaml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sonofm.train.trainer as trainer_module
    from sonofm.train.sampler import ResumableBatchSampler

    df = pd.read_parquet(dataset / "manifest.parquet")
    df["image"] = [str(dataset / p) for p in df["image"]]
    df["region"] = "liver"
    train = df.index[df["split"] == "train"]
    df.loc[train[::2], "region"] = "heart"  # 16 + 16 training rows
    manifest = tmp_path / "manifest.jsonl"
    df[["id", "patient_id", "split", "image", "report", "region"]].to_json(
        manifest, orient="records", lines=True
    )
    drawn: list[list[int]] = []

    class Recording(ResumableBatchSampler):
        def __iter__(self):  # type: ignore[no-untyped-def]
            for batch in super().__iter__():
                drawn.append(batch)
                yield batch

    monkeypatch.setattr(trainer_module, "ResumableBatchSampler", Recording)
    values = {
        "model": str(model_yaml),
        "data": {"path": str(manifest), "group_by": "region", "group_fraction": 1.0},
        "train": {"epochs": 1, "batch_size": 8, "workers": 0, "progress": False, "warmup_steps": 1},
    }
    pretrain(resolve_config(PretrainConfig, values=values), tmp_path / "run")
    regions = df[df["split"] == "train"]["region"].tolist()
    assert len(drawn) == 4  # 32 training rows, 16 per region
    assert all(len({regions[i] for i in batch}) == 1 for batch in drawn)

    values["data"]["group_by"] = "hospital"
    with pytest.raises(UserError, match=r"data.group_by='hospital'.*no such manifest column.*'region'"):
        pretrain(resolve_config(PretrainConfig, values=values), tmp_path / "run2")
    values["data"]["group_by"] = "organ"  # a standard column this dataset leaves empty
    with pytest.raises(UserError, match=r"data.group_by='organ': no training row .* has a value"):
        pretrain(resolve_config(PretrainConfig, values=values), tmp_path / "run3")


def test_validation_reads_its_images_once_and_replays_them(
    dataset: Path, model_yaml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from collections import Counter

    from sonofm.data.dataset import UltrasoundDataset

    reads: Counter[str] = Counter()
    original = UltrasoundDataset.__getitem__

    def counting(self, index):  # type: ignore[no-untyped-def]
        reads[str(self.table["split"].iloc[0])] += 1
        return original(self, index)

    monkeypatch.setattr(UltrasoundDataset, "__getitem__", counting)
    values = {
        "model": str(model_yaml),
        "data": {"path": str(dataset)},
        "train": {"epochs": 3, "batch_size": 8, "workers": 0, "progress": False, "warmup_steps": 1},
    }
    pretrain(resolve_config(PretrainConfig, values=values), tmp_path / "run")
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in rows if "val/r_mean" in r]) == 3  # three validations ...
    assert reads["val"] == 8  # ... from one read of the 8 validation images
    assert reads["train"] == 3 * 32
