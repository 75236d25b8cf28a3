"""Ultrasound-CLIP semantic objectives against brute-force implementations of docs/methods.md section 1."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sonofm.losses import ClipLoss
from sonofm.losses.semantic import (
    SemanticLoss,
    SoftClipLoss,
    TagVocabulary,
    cosine_to_similarity,
    encoder_hash,
    semantic_loss,
    semantic_targets,
    soft_clip_loss,
    tag_similarity_matrices,
)
from sonofm.taxonomy import DIMENSIONS, tag_ids


def _random_matrices(vocab: TagVocabulary, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    out = {}
    for d in vocab.dimensions:
        n = len(vocab.ids[d])
        a = rng.uniform(0, 1, (n, n))
        m = (a + a.T) / 2
        np.fill_diagonal(m, 1.0)
        out[d] = torch.tensor(m, dtype=torch.float32)
    return out


def _random_attributes(rng: np.random.Generator, n: int) -> list[dict[str, list[str]]]:
    samples = []
    for _ in range(n):
        attrs = {}
        for d in DIMENSIONS:
            ids = tag_ids(d)
            k = int(rng.integers(0, 3))  # 0 (empty list), 1 or 2 tags
            attrs[d] = [str(t) for t in rng.choice(ids, size=min(k, len(ids)), replace=False)]
        samples.append(attrs)
    return samples


def _brute_s(attrs: list[dict[str, list[str]]], mats: dict[str, torch.Tensor]) -> np.ndarray:
    n = len(attrs)
    s = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            total = 0.0
            for d in DIMENSIONS:
                ids = list(tag_ids(d))
                a, b = attrs[i][d], attrs[j][d]
                if a and b:
                    vals = [float(mats[d][ids.index(x), ids.index(y)]) for x in a for y in b]
                    total += sum(vals) / len(vals)
            s[i, j] = total / 9
        s[i, i] = 1.0
    return s


def test_target_matrix_equals_brute_force() -> None:
    rng = np.random.default_rng(0)
    vocab = TagVocabulary()
    mats = _random_matrices(vocab, rng)
    attrs = _random_attributes(rng, 10)
    attrs[3] = {d: [] for d in DIMENSIONS}  # an all-empty sample: 0 to everyone, 1 to itself
    got = semantic_targets(vocab.multi_hot(attrs), mats, vocab).numpy()
    want = _brute_s(attrs, mats)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert np.allclose(got, got.T)
    assert got[3, :3].max() == 0.0 and got[3, 3] == 1.0


def test_unknown_tags_are_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    vocab = TagVocabulary()
    hot = vocab.multi_hot([{"shape": ["oval", "not_a_shape"]}, None])
    assert hot.sum() == 1 and hot[0, vocab.index("shape", "oval")] == 1
    assert "not_a_shape" in caplog.text


def test_semantic_loss_equals_direct_formula() -> None:
    g = torch.Generator().manual_seed(1)
    img = F.normalize(torch.randn(6, 8, generator=g), dim=-1)
    txt = F.normalize(torch.randn(6, 8, generator=g), dim=-1)
    s = torch.rand(6, 6, generator=g)
    s = (s + s.T) / 2
    s.fill_diagonal_(1.0)
    tau = 0.07
    p = (img @ txt.T).double().numpy()
    sn = s.double().numpy()
    mse = ((p - sn) ** 2).mean()
    kl = 0.0
    for i in range(6):
        ps = np.exp(sn[i] / tau) / np.exp(sn[i] / tau).sum()
        pp = np.exp(p[i] / tau) / np.exp(p[i] / tau).sum()
        kl += float((ps * np.log(ps / pp)).sum())
    want = 0.6 * mse + 0.4 * kl / 6
    assert semantic_loss(img, txt, s, tau).item() == pytest.approx(want, rel=1e-5)
    out = SemanticLoss(_random_matrices(TagVocabulary(), np.random.default_rng(0)), tau=tau)
    assert set(out.matrices()) == set(DIMENSIONS)


def test_soft_clip_with_zero_eps_is_plain_clip_and_full_eps_is_soft_cross_entropy() -> None:
    g = torch.Generator().manual_seed(2)
    img = F.normalize(torch.randn(7, 8, generator=g), dim=-1)
    txt = F.normalize(torch.randn(7, 8, generator=g), dim=-1)
    scale = torch.tensor(1 / 0.07)
    s = torch.rand(7, 7, generator=g)
    s = (s + s.T) / 2
    s.fill_diagonal_(1.0)
    logits = scale * img @ txt.T
    plain = ClipLoss()(img, txt, scale)["contrastive_loss"]
    assert soft_clip_loss(logits, s, eps=0.0, tau_s=0.1).item() == pytest.approx(plain.item(), rel=1e-6)
    # eps = 0.5 by hand: -sum_j target_ij log softmax_ij, both directions
    eps, tau_s = 0.5, 0.1
    q = torch.softmax(s / tau_s, 1)
    t = (1 - eps) * torch.eye(7) + eps * q
    li = -(t * torch.log_softmax(logits, 1)).sum(1).mean()
    lt = -(t * torch.log_softmax(logits.T, 1)).sum(1).mean()  # S symmetric: same targets
    assert soft_clip_loss(logits, s, eps=eps, tau_s=tau_s).item() == pytest.approx(
        0.5 * (li + lt).item(), rel=1e-6
    )
    assert soft_clip_loss(logits, s, eps=0.5, tau_s=0.1).item() != pytest.approx(plain.item(), rel=1e-3)


def test_soft_clip_module_reads_attributes_from_outputs() -> None:
    rng = np.random.default_rng(3)
    vocab = TagVocabulary()
    mats = _random_matrices(vocab, rng)
    attrs = _random_attributes(rng, 5)
    g = torch.Generator().manual_seed(3)
    out = {
        "image_features": F.normalize(torch.randn(5, 4, generator=g), dim=-1),
        "text_features": F.normalize(torch.randn(5, 4, generator=g), dim=-1),
        "logit_scale": torch.tensor(10.0),
        "attributes_multi_hot": vocab.multi_hot(attrs),
    }
    s = torch.tensor(_brute_s(attrs, mats), dtype=torch.float32)
    logits = 10.0 * out["image_features"] @ out["text_features"].T
    got = SoftClipLoss(mats, vocab, eps=0.3, tau=0.07)(out)["soft_clip_loss"]
    assert got.item() == pytest.approx(soft_clip_loss(logits, s, 0.3, 0.07).item(), rel=1e-5)
    with pytest.raises(KeyError, match="attributes_multi_hot"):
        SoftClipLoss(mats, vocab)({k: v for k, v in out.items() if k != "attributes_multi_hot"})
    with pytest.raises(ValueError, match="eps"):
        SoftClipLoss(mats, vocab, eps=1.5)


def test_similarity_matrices_range_diagonal_and_cache(tmp_path) -> None:
    emb = torch.nn.Embedding(1000, 16)
    calls = []

    def encode(phrases: list[str]) -> torch.Tensor:
        calls.append(len(phrases))
        return emb(torch.tensor([sum(map(ord, p)) % 1000 for p in phrases]))

    mats = tag_similarity_matrices(encode, cache_key="enc-a", cache_dir=tmp_path, rescale="affine")
    for d, m in mats.items():
        n = len(tag_ids(d))
        assert m.shape == (n, n)
        assert torch.all((m >= 0) & (m <= 1))
        assert torch.allclose(m, m.T, atol=1e-6) and torch.all(m.diagonal() == 1)
    # (1 + cos) / 2 of the embeddings off the diagonal
    e = F.normalize(encode(list(TagVocabulary().phrases["shape"])), dim=-1)
    want = (1 + e @ e.T) / 2
    want.fill_diagonal_(1.0)
    assert torch.allclose(mats["shape"], want.detach(), atol=1e-6)
    n_calls = len(calls)

    def broken(phrases: list[str]) -> torch.Tensor:
        raise AssertionError("the cache should have been used")

    cached = tag_similarity_matrices(broken, cache_key="enc-a", cache_dir=tmp_path, rescale="affine")
    assert all(torch.equal(cached[d], mats[d]) for d in mats)
    assert len(calls) == n_calls
    # a corrupt cache file is recomputed, not trusted
    for f in tmp_path.glob("enc-a-*.safetensors"):
        f.write_bytes(b"garbage")
    again = tag_similarity_matrices(encode, cache_key="enc-a", cache_dir=tmp_path, rescale="affine")
    assert torch.allclose(again["organ"], mats["organ"])
    # the rescaling is part of the cache key: min-max is computed, not read from the affine file
    minmax = tag_similarity_matrices(encode, cache_key="enc-a", cache_dir=tmp_path)
    off = ~torch.eye(len(tag_ids("organ")), dtype=torch.bool)
    assert minmax["organ"][off].min() == 0.0 and minmax["organ"][off].max() == 1.0


def test_encoder_hash_follows_the_weights() -> None:
    a = torch.nn.Linear(3, 3)
    h1 = encoder_hash(a)
    assert encoder_hash(a) == h1
    with torch.no_grad():
        a.weight[0, 0] += 1.0
    assert encoder_hash(a) != h1


def test_minmax_rescaling_spreads_off_diagonal_and_keeps_order() -> None:
    e = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])  # cos: (0,1)=0.8, (0,2)=0, (1,2)=0.6
    m = cosine_to_similarity(e)
    assert m[0, 1].item() == pytest.approx(1.0) and m[0, 2].item() == pytest.approx(0.0)
    assert m[1, 2].item() == pytest.approx(0.75)
    assert torch.all(m.diagonal() == 1) and torch.allclose(m, m.T)
    two = cosine_to_similarity(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))  # one pair: affine fallback
    assert two[0, 1].item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="rescale"):
        cosine_to_similarity(e, "softmax")


def test_affine_rescaling_maps_opposite_vectors_to_zero() -> None:
    m = cosine_to_similarity(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]]), "affine")
    assert m[0, 1].item() == pytest.approx(0.0, abs=1e-7)
    assert m[0, 2].item() == pytest.approx(0.5)
    assert math.isclose(m[2, 2].item(), 1.0)
