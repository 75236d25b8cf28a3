"""Dual-path MoE (docs/methods.md section 5) against direct per-token computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sonofm.errors import UserError
from sonofm.models.moe import (
    DualPathMoE,
    MoEConfig,
    aux_loss,
    insert_moe,
    load_balancing_loss,
    routing_context,
    routing_stats,
)

D, FFN = 16, 24


def _tiny_lm(kind: str, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    kw = dict(
        vocab_size=50,
        hidden_size=D,
        intermediate_size=FFN,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
    )
    if kind == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**kw)).eval()
    return LlamaForCausalLM(LlamaConfig(**kw)).eval()


def _swiglu_ref(x: torch.Tensor, w1: torch.Tensor, w3: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """One token: W2 (silu(W1 x) * W3 x), weights as nn.Linear stores them (out, in)."""
    return w2 @ (F.silu(w1 @ x) * (w3 @ x))


def _reference(block: DualPathMoE, x: torch.Tensor) -> torch.Tensor:
    """Token-by-token computation of docs/methods.md section 5, written independently of the module."""
    out = torch.empty_like(x)
    flat = x.reshape(-1, x.shape[-1])
    res = out.view(-1, x.shape[-1])
    dense = block.dense
    for t in range(flat.shape[0]):
        xt = flat[t]
        p = torch.softmax(block.router.weight @ xt, dim=0)
        order = sorted(range(p.numel()), key=lambda e: -p[e].item())[: block.top_k]  # explicit top-2
        moe = torch.zeros_like(xt)
        for e in order:  # no renormalisation: raw p_e
            ex = block.experts[e]
            moe = moe + p[e] * _swiglu_ref(xt, ex.w1.weight, ex.w3.weight, ex.w2.weight)
        gate = torch.sigmoid(block.shared_gate.weight[0] @ xt)
        sh = block.shared
        moe = moe + gate * _swiglu_ref(xt, sh.w1.weight, sh.w3.weight, sh.w2.weight)
        c = torch.softmax(block.mix.weight @ xt, dim=0)
        d = _swiglu_ref(xt, dense.gate_proj.weight, dense.up_proj.weight, dense.down_proj.weight)
        res[t] = c[0] * moe + c[1] * d
    return out


def _block(seed: int = 0) -> DualPathMoE:
    lm = _tiny_lm("qwen2", seed)
    torch.manual_seed(seed + 1)
    block = insert_moe(lm, MoEConfig(ffn_dim=12))[0]
    with torch.no_grad():  # O(1) weights (non-trivial mix: zero-initialised in the module)
        for p in block.parameters():
            p.normal_(0, 0.5)
    return block


def test_block_equals_per_token_reference() -> None:
    block = _block()
    x = torch.randn(3, 5, D, dtype=torch.float64)
    block = block.double()
    with torch.no_grad():
        got = block(x)
        want = _reference(block, x)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    # the MoE path really contributes: without it the result differs
    block.fixed_mix = (0.0, 1.0)
    with torch.no_grad():
        assert (block(x) - want).abs().max() > 0.1 * want.abs().max()


def test_topk_weights_are_not_renormalised() -> None:
    block = _block().double()
    x = torch.randn(4, D, dtype=torch.float64)
    probs, weights, idx = block.route(x)
    assert idx.shape == (4, 2)
    torch.testing.assert_close(weights, probs.gather(1, idx))
    assert (weights.sum(-1) < 1 - 1e-6).all()  # 4 experts: the top-2 mass is below 1 for these tokens
    # MoE(x) with the shared expert switched off = sum of raw-weighted experts
    moe, _, _ = block.moe(x)
    shared = torch.sigmoid(block.shared_gate(x)) * block.shared(x)
    routed = moe - shared
    manual = sum(
        weights[:, j : j + 1] * torch.stack([block.experts[int(e)](x[t]) for t, e in enumerate(idx[:, j])])
        for j in range(2)
    )
    torch.testing.assert_close(routed, manual)


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
def test_mix_zero_one_equals_dense_lm(kind: str) -> None:
    lm = _tiny_lm(kind)
    ids = torch.randint(0, 50, (2, 7))
    with torch.no_grad():
        before = lm(input_ids=ids).logits
    blocks = insert_moe(lm, MoEConfig())
    assert len(blocks) == 2 and all(isinstance(layer.mlp, DualPathMoE) for layer in lm.model.layers)
    with torch.no_grad():
        mixed = lm(input_ids=ids).logits
    assert (mixed - before).abs().max() > 1e-4  # the learned mix (1/2, 1/2 at init) changes the output
    for b in blocks:
        b.fixed_mix = (0.0, 1.0)
    with torch.no_grad():
        after = lm(input_ids=ids).logits
    assert torch.equal(after, before)


def test_load_balancing_loss_formula() -> None:
    probs = torch.tensor(
        [
            [0.5, 0.3, 0.1, 0.1],
            [0.1, 0.6, 0.2, 0.1],
            [0.2, 0.2, 0.5, 0.1],
        ]
    )
    topk = torch.tensor([[0, 1], [1, 2], [2, 0]])
    # f = counts / (T*k) = [2, 2, 2, 0] / 6 ; P = column means
    f = [2 / 6, 2 / 6, 2 / 6, 0.0]
    p = [0.8 / 3, 1.1 / 3, 0.8 / 3, 0.3 / 3]
    want = 4 * sum(a * b for a, b in zip(f, p, strict=True))
    got = load_balancing_loss(probs, topk, 4)
    assert got.item() == pytest.approx(want, rel=1e-6)
    # perfectly balanced routing gives exactly 1
    uni = torch.full((4, 4), 0.25)
    assert load_balancing_loss(
        uni, torch.tensor([[0, 1], [2, 3], [0, 2], [1, 3]]), 4
    ).item() == pytest.approx(1.0)
    # all tokens on the same experts with confident probabilities is penalised
    skew = torch.tensor([[0.9, 0.1, 0.0, 0.0]] * 4)
    assert load_balancing_loss(skew, torch.tensor([[0, 1]] * 4), 4).item() == pytest.approx(4 * 0.5 * 1.0)


def test_aux_loss_through_forward_uses_valid_tokens_and_has_gradient() -> None:
    lm = _tiny_lm("qwen2")
    blocks = insert_moe(lm, MoEConfig(aux_loss=True))
    ids = torch.randint(0, 50, (2, 6))
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]])
    with routing_context(blocks, mask.bool(), ["breast", "heart"]):
        lm(input_ids=ids, attention_mask=mask)
    assert blocks[0].last_router_probs.shape == (10, 4)  # 2 padding tokens excluded
    per_layer = [load_balancing_loss(b.last_router_probs, b.last_topk, 4) for b in blocks]
    total = aux_loss(blocks)
    torch.testing.assert_close(total, torch.stack(per_layer).mean())
    total.backward()
    assert blocks[0].router.weight.grad is not None and blocks[0].router.weight.grad.abs().sum() > 0


def test_routing_stats_per_region() -> None:
    lm = _tiny_lm("qwen2")
    blocks = insert_moe(lm, MoEConfig())
    ids = torch.randint(0, 50, (3, 5))
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[2, :2] = False
    with torch.no_grad(), routing_context(blocks, mask, ["breast", "heart", "breast"]):
        lm(input_ids=ids, attention_mask=mask.long())
    stats = routing_stats(blocks)
    assert stats["num_experts"] == 4 and len(stats["layers"]) == 2
    # every valid token contributes top_k assignments per layer: breast 5 + 3 tokens, heart 5
    layer0 = stats["layers"][0]
    assert sum(layer0["breast"]["counts"]) == 8 * 2 and sum(layer0["heart"]["counts"]) == 5 * 2
    assert sum(stats["total"]["breast"]["counts"]) == 2 * 8 * 2
    assert sum(layer0["heart"]["fraction"]) == pytest.approx(1.0)
    # the counts are exactly those of the recorded top-k of the valid tokens
    want = torch.bincount(blocks[0].last_topk.reshape(-1), minlength=4)
    got = torch.tensor(layer0["breast"]["counts"]) + torch.tensor(layer0["heart"]["counts"])
    assert torch.equal(got, want)
    for b in blocks:
        b.reset_stats()
    assert routing_stats(blocks)["total"] == {}


def test_idle_experts_get_zero_gradients() -> None:
    # one token, top-2 of 4: two experts receive nothing but must still get (zero) gradients (DDP)
    block = _block()
    x = torch.randn(1, 1, D)
    block(x).sum().backward()
    _, _, idx = block.route(x.reshape(1, D))
    idle = set(range(4)) - set(idx[0].tolist())
    assert len(idle) == 2
    for e in range(4):
        g = block.experts[e].w1.weight.grad
        assert g is not None
        assert (g.abs().sum() == 0) == (e in idle)


def test_insert_moe_needs_decoder_layers() -> None:
    with pytest.raises(UserError, match="no decoder layers"):
        insert_moe(torch.nn.Linear(3, 3), MoEConfig())


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="top_k"):
        MoEConfig(num_experts=2, top_k=3)
