"""Composable objectives: spec parsing, config validation and `sonofm pretrain --loss usclip|echo`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from sonofm.config import PretrainConfig, resolve_config
from sonofm.errors import UserError
from sonofm.losses.compose import CompositeLoss, LossSpec, is_plain, parse_loss_spec
from tests.tiny_models import TINY_DUAL_ENCODER

TINY_MODEL = TINY_DUAL_ENCODER


def test_presets_and_combinations_parse() -> None:
    assert parse_loss_spec("usclip") == LossSpec((("soft_clip", 1.0), ("semantic", 1.0)), graph=True)
    assert parse_loss_spec("usclip", semantic_lambda=0.25).terms[1] == ("semantic", 0.25)
    assert parse_loss_spec("ECHO") == LossSpec((("clip", 1.0), ("view", 1.0), ("negation", 1.0)))
    spec = parse_loss_spec("clip+semantic:0.5+view:1")
    assert spec.terms == (("clip", 1.0), ("semantic", 0.5), ("view", 1.0)) and not spec.graph
    assert spec.needs_attributes and spec.needs_views and not spec.needs_negatives
    assert str(parse_loss_spec("soft+graph")) == "soft_clip:1+graph"
    assert is_plain("clip") and is_plain(" SigLIP ") and not is_plain("clip+view")


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("clip+bogus", "unknown term 'bogus'"),
        ("clip+view:x", "not a number"),
        ("graph", "no loss term"),
        ("clip+clip", "twice"),
        ("clip+graph:2", "takes no weight"),
        ("clip+view:-1", ">= 0"),
        ("clip++view", "empty"),
    ],
)
def test_bad_specs_name_the_problem(spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_loss_spec(spec)


def test_config_accepts_objectives_and_rejects_bad_ones() -> None:
    cfg = resolve_config(PretrainConfig, values={"loss": {"name": "usclip", "soft_eps": 0.1}})
    assert cfg.loss.name == "usclip" and cfg.loss.soft_eps == 0.1
    with pytest.raises(UserError, match="unknown term"):
        resolve_config(PretrainConfig, values={"loss": {"name": "clip+nope"}})


def test_composite_loss_weights_each_term() -> None:
    class Const(torch.nn.Module):
        def __init__(self, key: str, v: float) -> None:
            super().__init__()
            self.key, self.v = key, v

        def forward(self, outputs: Any) -> dict[str, torch.Tensor]:
            return {self.key: torch.tensor(self.v)}

    out = CompositeLoss([("a", 0.5, Const("a_loss", 2.0)), ("b", 3.0, Const("b_loss", 1.0))])({})
    assert {k: v.item() for k, v in out.items()} == {"a_loss": 1.0, "b_loss": 3.0}


# ------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "data"
    result = CliRunner().invoke(
        _app(), ["simulate", "--out", str(out), "--n", "48", "--size", "64", "--regions", "heart,thyroid"]
    )
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def model_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_MODEL))
    return path


def _app() -> Any:
    from sonofm.cli import app

    return app


def _pretrain(
    sim: Path, out: Path, loss: str, model_yaml: Path, monkeypatch: pytest.MonkeyPatch
) -> list[dict]:
    monkeypatch.setenv("SONOFM_CACHE", str(out.parent / "cache"))
    args = [
        "pretrain",
        "--data",
        str(sim),
        "--out",
        str(out),
        "--loss",
        loss,
        "--batch-size",
        "8",
        f"model={model_yaml}",
        "train.max_steps=2",
        "train.epochs=1",
        "train.log_every=1",
        "train.workers=0",
        "train.progress=false",
        "train.warmup_steps=1",
        "data.augment=0",
        "data.val_split=null",
    ]
    result = CliRunner().invoke(_app(), args)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_pretrain_usclip_logs_every_term_and_saves_a_graph_model(
    sim: Path, model_yaml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = _pretrain(sim, tmp_path / "us", "usclip", model_yaml, monkeypatch)
    steps = [r for r in records if "loss" in r]
    assert len(steps) == 2
    for r in steps:
        assert {"soft_clip_loss", "semantic_loss"} <= set(r)
        assert r["loss"] == pytest.approx(r["soft_clip_loss"] + r["semantic_loss"], rel=1e-5)
    assert list((tmp_path / "cache" / "tag_similarity").glob("*.safetensors"))  # M_k cached per encoder
    from sonofm.models import load_model
    from sonofm.models.attribute_graph import AttributeGraphDualEncoder

    model = load_model(tmp_path / "us" / "model")
    assert isinstance(model, AttributeGraphDualEncoder)
    tok = model.tokenize(["a hypoechoic thyroid nodule.", "normal heart."])
    with torch.no_grad():
        plain = model.encode_text(tok["input_ids"], tok["attention_mask"])
        fused = model.encode_text(
            tok["input_ids"],
            tok["attention_mask"],
            attributes=[{"diagnosis": ["nodule"], "organ": ["thyroid"]}, None],
        )
    assert torch.allclose(plain.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(plain[0], fused[0]) and torch.allclose(plain[1], fused[1], atol=1e-6)


def test_pretrain_echo_logs_every_term(
    sim: Path, model_yaml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = _pretrain(sim, tmp_path / "echo", "echo", model_yaml, monkeypatch)
    steps = [r for r in records if "loss" in r]
    assert len(steps) == 2
    for r in steps:
        assert {"contrastive_loss", "view_loss", "negation_loss"} <= set(r)
        # hard negatives only ever add to the denominator
        assert r["negation_loss"] > 0.5 * r["contrastive_loss"]


def test_pretrain_weighted_combination(
    sim: Path, model_yaml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = _pretrain(sim, tmp_path / "combo", "clip+semantic:0.5+view:2", model_yaml, monkeypatch)
    r = next(r for r in records if "loss" in r)
    assert {"contrastive_loss", "semantic_loss", "view_loss"} <= set(r)
    assert r["loss"] == pytest.approx(r["contrastive_loss"] + r["semantic_loss"] + r["view_loss"], rel=1e-5)
