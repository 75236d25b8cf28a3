"""The fast training step: fused/foreach AdamW, no host syncs between log steps, the device-side
skip of non-finite steps, the attention choice and the ``train.compile`` fallback."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from sonofm.config import TrainerConfig
from sonofm.inference.precision import choose_attention
from sonofm.losses import ClipLoss
from sonofm.train import ContrastiveStep, Trainer, TrainingDiverged
from sonofm.train import compile as compile_mod
from sonofm.train.optim import build_optimizer, is_fused
from tests.train.standin import PairData, StandInDual, collate


def _config(**kw) -> TrainerConfig:
    base = dict(batch_size=8, epochs=1, lr=5e-3, warmup_steps=2, log_every=1, progress=False, device="cpu")
    return TrainerConfig(**{**base, **kw})


def _trainer(tmp_path: Path, step=None, **kw) -> Trainer:
    torch.manual_seed(0)
    return Trainer(
        StandInDual(dropout=0.0),
        step or ContrastiveStep(ClipLoss()),
        _config(**kw),
        tmp_path,
        PairData(48),
        collate_fn=collate,
    )


@pytest.mark.parametrize("impl", ["fused", "foreach"])
def test_fast_adamw_matches_the_per_parameter_loop(impl: str) -> None:
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5), nn.Linear(5, 3))
    fast = nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5), nn.Linear(5, 3))
    fast.load_state_dict(ref.state_dict())
    opts = [build_optimizer(m, 1e-2, impl=i) for m, i in ((ref, "loop"), (fast, impl))]
    assert is_fused(opts[1]) == (impl == "fused")
    x = torch.randn(16, 6)
    for _ in range(3):
        for model, opt in zip((ref, fast), opts, strict=True):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for a, b in zip(ref.parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_auto_picks_the_fused_kernel_on_cpu() -> None:
    assert is_fused(build_optimizer(nn.Linear(3, 3), 1e-3))


@contextlib.contextmanager
def count_host_syncs() -> Iterator[list[str]]:
    """Record every read of a tensor's value into Python (item/float/int/bool/tolist)."""
    calls: list[str] = []
    names = ("item", "__float__", "__int__", "__bool__", "tolist")
    originals = {n: getattr(torch.Tensor, n) for n in names}

    def wrap(name: str):
        def counted(self, *a, **k):
            calls.append(name)
            return originals[name](self, *a, **k)

        return counted

    for n in names:
        setattr(torch.Tensor, n, wrap(n))
    try:
        yield calls
    finally:
        for n, f in originals.items():
            setattr(torch.Tensor, n, f)


def test_a_training_step_reads_nothing_back_to_the_host(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, grad_clip=1.0)
    batches = [collate([trainer.dataset[i] for i in range(j * 8, j * 8 + 8)]) for j in range(3)]
    trainer.train_step([batches[0]])  # first-call set-up may inspect values
    with count_host_syncs() as calls:
        record = trainer.train_step([batches[1]])
        trainer.train_step([batches[2]])
    assert calls == []
    assert isinstance(record["loss"], torch.Tensor) and isinstance(record["grad_norm"], torch.Tensor)


def test_fit_syncs_only_at_log_steps(tmp_path: Path) -> None:
    def syncs_of(log_every: int) -> int:
        trainer = _trainer(tmp_path / str(log_every), log_every=log_every, val_every=0)
        trainer.config.checkpoint_every = 0
        with count_host_syncs() as calls:
            trainer.fit()
        return len(calls)

    # 6 steps: logging at steps 1 and 6 only (every 100) vs at every step.
    few, every = syncs_of(100), syncs_of(1)
    assert few < every
    per_log = (every - few) / 4  # four extra logged steps
    assert few <= 2 * per_log + 40  # the rest: epoch-end checkpoint and set-up, no per-step reads


def test_a_non_finite_step_is_skipped_on_the_device_and_reported(tmp_path: Path) -> None:
    class NanAt2(ContrastiveStep):
        calls = 0

        def loss(self, outputs):
            self.calls += 1
            terms = super().loss(outputs)
            if self.calls == 2:
                terms["contrastive_loss"] = terms["contrastive_loss"] * float("nan")
            return terms

    trainer = _trainer(tmp_path, step=NanAt2(ClipLoss()), log_every=100, checkpoint_every=0, val_every=0)
    assert is_fused(trainer.optimizer)
    batches = [collate([trainer.dataset[i] for i in range(j * 8, j * 8 + 8)]) for j in range(2)]
    trainer.train_step([batches[0]])
    trainer.step = 1
    before = {k: v.clone() for k, v in trainer.raw_model.state_dict().items()}
    steps_before = [s["step"].clone() for s in trainer.optimizer.state.values()]
    trainer.train_step([batches[1]])  # NaN: no exception yet, no host read
    trainer.step = 2
    for name, p in trainer.raw_model.state_dict().items():
        assert torch.equal(p, before[name]), name  # the fused kernel skipped the update
    assert [s["step"] for s in trainer.optimizer.state.values()] == steps_before
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 2 "):
        trainer.check_finite()


def test_choose_attention_follows_the_measured_table() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert choose_attention("bf16", cpu, 65) == "eager"
    assert choose_attention("bf16", cpu, 577) == "sdpa"
    assert choose_attention("fp32", cpu, 65) == "eager"
    assert choose_attention("fp32", cpu, 197) == "sdpa"
    assert choose_attention("bf16", cuda, 65) == "sdpa"


def test_trainer_sets_the_image_towers_attention_and_both_kernels_agree(tmp_path: Path) -> None:
    from sonofm.models import build_model
    from sonofm.models.config import DualEncoderConfig
    from tests.tiny_models import TINY_DUAL_ENCODER

    torch.manual_seed(0)
    model = build_model(DualEncoderConfig(**TINY_DUAL_ENCODER))
    images = torch.rand(4, 1, 32, 32)
    model.eval()
    model.visual.set_attention("sdpa")
    with torch.no_grad():
        ref = model.encode_image(images)
    Trainer(
        model,
        ContrastiveStep(ClipLoss()),
        _config(precision="bf16"),
        tmp_path,
        PairData(48),
        collate_fn=collate,
    )
    assert model.visual.tokens == 17
    assert model.visual.backbone.config._attn_implementation == "eager"
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(images), ref, rtol=1e-5, atol=1e-6)


def test_compile_is_skipped_where_unsupported(monkeypatch, caplog) -> None:
    monkeypatch.setattr(compile_mod.shutil, "which", lambda name: None)
    model = nn.Linear(2, 2)
    with caplog.at_level(logging.WARNING):
        assert compile_mod.compile_model(model, torch.device("cpu")) is model
    assert "no C++ compiler" in caplog.text


def test_a_failing_compile_falls_back_to_eager(tmp_path: Path, monkeypatch, caplog) -> None:
    class Broken(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self._orig_mod = inner

        def forward(self, *args, **kwargs):
            raise RuntimeError("backend compiler failed")

    monkeypatch.setattr(compile_mod, "compile_unsupported", lambda device=None: None)
    monkeypatch.setattr(compile_mod.torch, "compile", lambda model: Broken(model))
    trainer = _trainer(tmp_path, compile=True, val_every=0)
    with caplog.at_level(logging.WARNING):
        result = trainer.fit()
    assert result.step == 6
    assert "torch.compile failed" in caplog.text
    assert trainer.model is trainer.raw_model


def test_resume_from_a_non_fused_checkpoint_does_not_pass_found_inf_to_foreach() -> None:
    """A checkpoint written by a foreach optimizer turns the groups' fused flag off on load."""
    from sonofm.train.optim import is_fused

    w = torch.nn.Parameter(torch.ones(3))
    old = torch.optim.AdamW([w], lr=0.1, foreach=True)
    w.grad = torch.ones(3)
    old.step()
    new = torch.optim.AdamW([w], lr=0.1, fused=True)
    assert is_fused(new)
    new.load_state_dict(old.state_dict())
    assert not is_fused(new)  # the trainer must not hand this optimizer a found_inf
