"""Weight-decay exclusions and the warmup + cosine schedule."""

from __future__ import annotations

import math

import pytest
import torch

from sonofm.train.optim import WarmupCosine, build_optimizer, build_scheduler, param_groups
from tests.train.standin import StandInDual


def test_weight_decay_exclusions() -> None:
    model = StandInDual(bias=True)
    groups = {g["group"]: g for g in param_groups(model, 0.2)}
    decay, no_decay = set(groups["decay"]["names"]), set(groups["no_decay"]["names"])
    assert decay == {"image_proj.1.weight", "image_proj.3.weight", "text_proj.weight"}
    assert {
        "image_proj.1.bias",
        "image_proj.3.bias",
        "text_proj.bias",
        "norm.weight",
        "norm.bias",
        "logit_scale",
        "logit_bias",
        "token_embedding.weight",
    } == no_decay
    assert groups["decay"]["weight_decay"] == 0.2 and groups["no_decay"]["weight_decay"] == 0.0


def test_excluded_parameters_are_not_decayed_by_adamw() -> None:
    model = StandInDual()
    opt = build_optimizer(model, lr=0.1, weight_decay=0.5)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # zero gradient: only decay can move a weight
    opt.step()
    for name, p in model.named_parameters():
        if name in ("image_proj.1.weight", "image_proj.3.weight", "text_proj.weight"):
            torch.testing.assert_close(p, before[name] * (1 - 0.1 * 0.5))
        else:
            assert torch.equal(p, before[name]), name


def test_frozen_parameters_are_left_out() -> None:
    model = StandInDual()
    model.text_proj.weight.requires_grad_(False)
    names = [n for g in param_groups(model, 0.1) for n in g["names"]]
    assert "text_proj.weight" not in names


def test_warmup_cosine_key_steps() -> None:
    f = WarmupCosine(warmup=10, total=110, min_ratio=0.1)
    assert f(0) == pytest.approx(0.1)  # first step already moves
    assert f(4) == pytest.approx(0.5)
    assert f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)  # cosine starts at the peak
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the decay
    assert f(35) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.25)))
    assert f(110) == pytest.approx(0.1)
    assert f(500) == pytest.approx(0.1)  # clamped past the end


def test_scheduler_drives_optimizer_lr() -> None:
    model = StandInDual()
    opt = build_optimizer(model, lr=2e-3)
    sched = build_scheduler(opt, warmup=4, total=20)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(2e-3 / 4)
    assert lrs[3] == pytest.approx(2e-3)
    assert lrs[12] == pytest.approx(2e-3 * 0.5)
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:], strict=False))  # monotone after warmup
    assert {g["lr"] for g in opt.param_groups} == {opt.param_groups[0]["lr"]}


def test_schedule_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="total"):
        WarmupCosine(0, 0)
    with pytest.raises(ValueError, match="min_ratio"):
        WarmupCosine(0, 10, 2.0)


def test_lr_scales_give_pretrained_parts_a_fraction_of_the_rate_through_the_schedule() -> None:
    model = StandInDual(bias=True)
    opt = build_optimizer(model, lr=0.1, weight_decay=0.2, lr_scales={"text_proj.": 0.05, "text_proj.b": 0.5})
    sched = build_scheduler(opt, warmup=2, total=10)
    by_name = {n: g for g in opt.param_groups for n in g["names"]}
    assert by_name["text_proj.weight"]["weight_decay"] == 0.2  # the split keeps decay exclusions
    assert by_name["text_proj.bias"]["weight_decay"] == 0.0
    for _ in range(4):
        opt.step()
        sched.step()
        base = by_name["image_proj.1.weight"]["lr"]
        assert by_name["text_proj.weight"]["lr"] == pytest.approx(0.05 * base)
        assert by_name["text_proj.bias"]["lr"] == pytest.approx(0.5 * base)  # longest prefix wins
    # the update itself is scaled: one Adam step moves a weight by about lr
    p = model.text_proj.weight
    before = p.detach().clone()
    p.grad = torch.ones_like(p)
    opt.step()
    moved = (before * (1 - by_name["text_proj.weight"]["lr"] * 0.2) - p.detach()).abs().mean()
    assert moved.item() == pytest.approx(by_name["text_proj.weight"]["lr"], rel=0.05)


def test_lr_scales_that_match_nothing_or_are_not_positive_are_refused() -> None:
    with pytest.raises(ValueError, match="match no parameter"):
        param_groups(StandInDual(), 0.1, lr_scales={"txt.": 0.1})
    with pytest.raises(ValueError, match="must be > 0"):
        param_groups(StandInDual(), 0.1, lr_scales={"text_proj.": 0.0})
