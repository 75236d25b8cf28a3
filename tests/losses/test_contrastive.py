"""CLIP / SigLIP losses against independent references written out element by element."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sonofm.losses import ClipLoss, SigLipLoss, build_contrastive_loss


def _features(n: int = 6, d: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    txt = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    return img.requires_grad_(), txt.requires_grad_()


def _clip_reference_loops(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """-1/2N * sum_i [log softmax_j(s x_i.y_j)[i] + log softmax_j(s y_i.x_j)[i]], written per element."""
    n = img.shape[0]
    total = img.new_zeros(())
    for i in range(n):
        row_i = [scale * (img[i] * txt[j]).sum() for j in range(n)]
        row_t = [scale * (txt[i] * img[j]).sum() for j in range(n)]
        lse_i = torch.log(sum(torch.exp(v) for v in row_i))
        lse_t = torch.log(sum(torch.exp(v) for v in row_t))
        total = total - (row_i[i] - lse_i) - (row_t[i] - lse_t)
    return total / (2 * n)


def _siglip_reference_loops(img, txt, scale, bias) -> torch.Tensor:
    n = img.shape[0]
    total = img.new_zeros(())
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            logit = scale * (img[i] * txt[j]).sum() + bias
            total = total - torch.log(1.0 / (1.0 + torch.exp(-z * logit)))
    return total / n


def _grads(loss: torch.Tensor, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad(loss, inputs)


def test_clip_loss_and_gradients_match_elementwise_reference() -> None:
    img, txt = _features()
    scale = torch.tensor(math.exp(2.3), dtype=torch.float64, requires_grad=True)
    ours = ClipLoss()(img, txt, scale)["contrastive_loss"]
    ref = _clip_reference_loops(img, txt, scale)
    assert ours.dtype == torch.float32  # loss runs in fp32 regardless of input dtype
    torch.testing.assert_close(ours.double(), ref, atol=1e-5, rtol=1e-5)
    g_ours = _grads(ours, img, txt, scale)
    g_ref = _grads(ref, img, txt, scale)
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a.double(), b, atol=1e-5, rtol=1e-4)


def test_clip_loss_matches_cross_entropy_both_directions() -> None:
    img, txt = _features(n=9, d=7, seed=3)
    img, txt = img.float(), txt.float()
    scale = torch.tensor(20.0)
    logits = scale * img @ txt.T
    labels = torch.arange(9)
    expected = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    torch.testing.assert_close(ClipLoss()(img, txt, scale)["contrastive_loss"], expected)


def test_clip_loss_is_low_for_aligned_pairs_and_high_for_shuffled() -> None:
    img, _ = _features(n=8, d=16, seed=1)
    img = img.detach().float()
    scale = torch.tensor(50.0)
    aligned = ClipLoss()(img, img, scale)["contrastive_loss"]
    shuffled = ClipLoss()(img, img.roll(1, 0), scale)["contrastive_loss"]
    assert aligned < 0.5 < math.log(8) < shuffled


def test_siglip_loss_and_gradients_match_direct_formula() -> None:
    img, txt = _features(n=5, d=4, seed=2)
    scale = torch.tensor(10.0, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-3.0, dtype=torch.float64, requires_grad=True)
    ours = SigLipLoss()(img, txt, scale, bias)["contrastive_loss"]
    ref = _siglip_reference_loops(img, txt, scale, bias)
    torch.testing.assert_close(ours.double(), ref, atol=1e-5, rtol=1e-5)
    for a, b in zip(_grads(ours, img, txt, scale, bias), _grads(ref, img, txt, scale, bias), strict=True):
        torch.testing.assert_close(a.double(), b, atol=1e-5, rtol=1e-4)


def test_siglip_without_bias_equals_zero_bias() -> None:
    img, txt = _features(seed=4)
    scale = torch.tensor(5.0)
    a = SigLipLoss()(img.float(), txt.float(), scale)["contrastive_loss"]
    b = SigLipLoss()(img.float(), txt.float(), scale, torch.tensor(0.0))["contrastive_loss"]
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", ["clip", "siglip"])
def test_loss_stays_fp32_under_bf16_autocast(name: str) -> None:
    img, txt = _features(n=8, d=8, seed=5)
    img, txt = img.detach().float(), txt.detach().float()
    loss_fn = build_contrastive_loss(name)
    scale, bias = torch.tensor(30.0), torch.tensor(-2.0)
    expected = loss_fn(img, txt, scale, bias)["contrastive_loss"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = loss_fn(img, txt, scale, bias)["contrastive_loss"]
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected)


def test_bad_configuration_is_rejected() -> None:
    with pytest.raises(ValueError, match="gather_with_grad"):
        ClipLoss(gather_with_grad=False, local_loss=True)
    with pytest.raises(ValueError, match="unknown contrastive loss"):
        build_contrastive_loss("triplet")
