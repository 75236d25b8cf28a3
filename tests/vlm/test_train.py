"""Training stages: what each stage may change, LoRA merge, routing logs, exact resume, CLI."""

from __future__ import annotations

import json

import pytest
import torch

from sonofm.errors import UserError
from sonofm.train.checkpoint import load_checkpoint
from sonofm.vlm.train import VLMTrainConfig, resolve_model_config, train_vlm
from tests.vlm.conftest import TINY_VLM


def _cfg(data, **kw) -> VLMTrainConfig:
    base = {
        "model": TINY_VLM,
        "stage": "1",
        "data": {
            "path": str(data),
            "tasks": ["report", "vqa_closed"],
            "val_split": None,
            "questions_per_image": 1,
        },
        "train": {"batch_size": 4, "progress": False, "log_every": 1, "checkpoint_every": 2, "device": "cpu"},
        "stage1": {"epochs": 1, "max_steps": 4, "lr": 1e-2},
        "stage2": {"epochs": 1, "max_steps": 2, "lr": 1e-2},
        "lora": {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0, "train_embeddings": False},
    }
    for k, v in kw.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return VLMTrainConfig.model_validate(base)


def _initial_model(cfg: VLMTrainConfig, run):
    """The run's initial weights, rebuilt from its seed and saved tokenizer."""
    from sonofm.models.text_towers import load_tokenizer
    from sonofm.models.vlm import build_vlm

    torch.manual_seed(cfg.train.seed)
    return build_vlm(resolve_model_config(cfg), load_tokenizer(str(run / "tokenizer")))


@pytest.fixture(scope="module")
def stage1_run(lesion_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("vlm_stage1")
    cfg = _cfg(lesion_dir)
    return cfg, run, train_vlm(cfg, run)


def test_stage1_trains_only_moe_and_projector(stage1_run):
    cfg, run, res = stage1_run
    init = _initial_model(cfg, run).state_dict()
    final = res.model.state_dict()
    trained = {id(p) for p in res.model.moe_parameters()} | {id(p) for p in res.model.projector.parameters()}
    changed_trained, n_frozen = 0, 0
    for name, p in res.model.named_parameters():
        same = torch.equal(init[name], final[name])
        if id(p) in trained:
            changed_trained += not same
        else:
            n_frozen += 1
            assert same, f"stage 1 changed frozen parameter {name}"
    assert n_frozen > 10 and len(trained) > 10
    # every projector tensor and most MoE tensors moved (an expert may get no token in 4 steps)
    assert all(not torch.equal(init[n], final[n]) for n in final if n.startswith("projector."))
    assert changed_trained >= 0.5 * len(trained)
    # the saved model dirs load back to the same weights
    from sonofm.models import load_model

    again = load_model(str(run / "model"))
    for n, t in again.state_dict().items():
        assert torch.equal(t, final[n]), n
    # routing statistics per region were logged per step, and totals written
    lines = [json.loads(x) for x in (run / "stage1" / "routing.jsonl").read_text().splitlines()]
    assert lines and set(lines[0]["fraction"]) <= {"breast", "thyroid"}
    for fr in lines[-1]["fraction"].values():
        assert sum(fr) == pytest.approx(1.0)
    totals = json.loads((run / "stage1" / "routing.json").read_text())
    assert len(totals["layers"]) == 2 and set(totals["total"]) <= {"breast", "thyroid"}
    metrics = [json.loads(x) for x in (run / "stage1" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["lm_loss"] > 0 and "moe_aux_loss" in metrics[0]
    # warmup = 5% of 4 steps -> 1 step: the first step runs at the full peak lr
    assert metrics[0]["lr"] == pytest.approx(1e-2)


def test_stage2_lora_keeps_base_frozen_and_merges(stage1_run, lesion_dir, tmp_path):
    cfg1, run1, res1 = stage1_run
    cfg = _cfg(lesion_dir, stage="2", init_from=str(run1 / "stage1" / "model"))
    res = train_vlm(cfg, tmp_path)
    start = res1.model.state_dict()
    state = load_checkpoint(tmp_path / "stage2" / "checkpoints" / "latest.pt")["model"]
    lora = [k for k in state if "lora_A" in k or "lora_B" in k]
    assert lora, "stage 2 did not add LoRA adapters"
    assert any(".q_proj." in k for k in lora) and any(".gate_proj." in k for k in lora)
    assert not any("experts" in k for k in lora)  # experts get full gradients, not LoRA
    bases = [k for k in state if k.endswith("base_layer.weight")]
    for k in bases:  # base weights under the adapters are untouched
        plain = k.replace("base_model.model.", "").replace(".base_layer", "")
        assert torch.equal(state[k], start[plain]), k
    emb = [k for k in state if k.endswith("embed_tokens.weight")][0]
    assert torch.equal(state[emb], start["lm.model.embed_tokens.weight"])
    # MoE parameters kept learning
    moe_keys = [k for k in start if "experts" in k]
    moe_state = {k.replace("base_model.model.", ""): v for k, v in state.items()}
    assert any(not torch.equal(start[k], moe_state[k]) for k in moe_keys)
    # the saved model is the merge W + (alpha / r) * B @ A
    q = [k for k in bases if ".q_proj." in k][0]
    a = state[q.replace("base_layer.weight", "lora_A.default.weight")]
    b = state[q.replace("base_layer.weight", "lora_B.default.weight")]
    plain = q.replace("base_model.model.", "").replace(".base_layer", "")
    merged = res.model.state_dict()[plain]
    assert torch.allclose(merged, state[q] + (8 / 4) * b @ a, atol=1e-6)
    assert not hasattr(res.model.lm, "peft_config")


def test_resume_is_exact(lesion_dir, tmp_path, monkeypatch):
    from sonofm.train import trainer as trainer_mod

    cfg = _cfg(lesion_dir)
    full = train_vlm(cfg, tmp_path / "full").model.state_dict()

    real = trainer_mod.Trainer.train_step
    calls = {"n": 0}

    def crash_after_two(self, micro):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated kill")
        return real(self, micro)

    monkeypatch.setattr(trainer_mod.Trainer, "train_step", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        train_vlm(cfg, tmp_path / "cut")
    monkeypatch.setattr(trainer_mod.Trainer, "train_step", real)
    resumed = train_vlm(cfg, tmp_path / "cut", resume="latest")
    assert resumed.stages["1"].step == 4
    for n, t in resumed.model.state_dict().items():
        assert torch.equal(t, full[n]), n
    # a finished stage is loaded, not retrained
    again = train_vlm(cfg, tmp_path / "cut", resume="latest")
    assert again.stages == {}
    for n, t in again.model.state_dict().items():
        assert torch.equal(t, full[n]), n


def test_cli_train_vlm(lesion_dir, tmp_path):
    import yaml
    from typer.testing import CliRunner

    from sonofm.cli import app

    model_yaml = tmp_path / "tiny-unit.yaml"
    model_yaml.write_text(yaml.safe_dump(TINY_VLM))
    args = [
        "train-vlm", "--data", str(lesion_dir), "--out", str(tmp_path / "run"), "--dense", "--stage", "1",
        f"model={model_yaml}", "stage1.max_steps=1", "train.batch_size=4", "train.progress=false",
        "data.tasks=[report]", "data.val_split=null",
    ]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    cfg = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert cfg["model_type"] == "sono_vlm" and cfg["config"]["moe"] is None
    bad = ["train-vlm", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "x"), f"model={model_yaml}"]
    res = CliRunner().invoke(app, bad)
    assert isinstance(res.exception, UserError) and "no such dataset directory" in str(res.exception)
    res = CliRunner().invoke(app, [*bad[:5], "--stage", "3"])
    assert isinstance(res.exception, UserError) and "expected 1, 2 or both" in str(res.exception)


def test_stage_freezing_rules_without_training():
    from sonofm.models.vlm import VLMConfig, build_vlm, dense_equivalent_config, train_tokenizer
    from sonofm.vlm.train import LoRASettings, apply_stage2, freeze_for_stage1

    tok = train_tokenizer(["Findings: a cyst. Impression: cyst."] * 4, 300)
    cfg = VLMConfig.model_validate(TINY_VLM)
    # stage 1 of a dense model: only the projector
    dense = build_vlm(dense_equivalent_config(cfg), tok)
    assert all(n.startswith("projector.") for n in freeze_for_stage1(dense))
    # stage 2, lora auto on a from-scratch LM: the whole LM + MoE + projector, tower frozen, no adapters
    model = build_vlm(cfg, tok)
    names = apply_stage2(model, LoRASettings())
    assert not any("lora_" in n for n in names) and not any(n.startswith("visual.") for n in names)
    assert {n for n, _ in model.lm.named_parameters()} == {n[3:] for n in names if n.startswith("lm.")}
    # forced LoRA on a from-scratch LM: adapters + embeddings + MoE, base projections frozen
    model = build_vlm(cfg, tok)
    names = apply_stage2(model, LoRASettings(enabled=True), train_visual=True)
    assert any("lora_A" in n for n in names) and any("embed_tokens" in n for n in names)
    assert not any(n.endswith("q_proj.base_layer.weight") for n in names)
    assert any(n.startswith("visual.") for n in names) and any("experts" in n for n in names)
    with pytest.raises(UserError, match="match no linear layer"):
        apply_stage2(build_vlm(cfg, tok), LoRASettings(enabled=True, target_modules=["c_attn"]))
