"""Accumulation with feature caching computes the big-batch contrastive gradient exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sonofm.config import TrainerConfig
from sonofm.losses import build_contrastive_loss
from sonofm.train import ContrastiveStep, Trainer
from tests.train.standin import PairData, StandInDual, collate


def _trainer(tmp_path: Path, loss: str, dropout: float = 0.0) -> Trainer:
    torch.manual_seed(0)
    model = StandInDual(dropout=dropout, bias=loss == "siglip").double()
    cfg = TrainerConfig(batch_size=4, accum_steps=4, progress=False, device="cpu")
    return Trainer(
        model, ContrastiveStep(build_contrastive_loss(loss)), cfg, tmp_path, PairData(16), collate_fn=collate
    )


def _batches(data: PairData, sizes: list[int]) -> list[dict]:
    out, start = [], 0
    for n in sizes:
        b = collate([data[i] for i in range(start, start + n)])
        b["image"] = b["image"].double()
        out.append(b)
        start += n
    return out


def _grads(trainer: Trainer, micro: list[dict], cached: bool) -> dict[str, torch.Tensor]:
    trainer.optimizer.zero_grad(set_to_none=True)
    if cached:
        trainer._cached_accumulation(micro)
    else:
        trainer._plain_accumulation(micro)
    return {n: p.grad.clone() for n, p in trainer.raw_model.named_parameters()}


@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_cached_accumulation_equals_one_big_batch(tmp_path: Path, loss: str) -> None:
    trainer = _trainer(tmp_path, loss)
    data = PairData(16)
    big = _grads(trainer, _batches(data, [16]), cached=False)
    cached = _grads(trainer, _batches(data, [4, 4, 4, 4]), cached=True)
    plain = _grads(trainer, _batches(data, [4, 4, 4, 4]), cached=False)
    for name in big:
        torch.testing.assert_close(cached[name], big[name], atol=1e-5, rtol=0, msg=name)
    # without caching each micro-batch only sees its own negatives: a different gradient
    assert max((plain[n] - big[n]).abs().max().item() for n in big) > 1e-3


def test_cached_accumulation_handles_uneven_micro_batches(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, "clip")
    data = PairData(16)
    big = _grads(trainer, _batches(data, [15]), cached=False)
    cached = _grads(trainer, _batches(data, [4, 3, 4, 4]), cached=True)  # one image failed to decode
    for name in big:
        torch.testing.assert_close(cached[name], big[name], atol=1e-5, rtol=0, msg=name)


def test_recomputed_features_match_cached_ones_under_dropout(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, "clip", dropout=0.5)
    seen: list[torch.Tensor] = []
    original = trainer.step_fn.loss

    def spy(outputs: dict) -> dict:
        seen.append(outputs["image_features"].detach().clone())
        return original(outputs)

    trainer.step_fn.loss = spy  # type: ignore[method-assign]
    trainer.raw_model.train()
    _grads(trainer, _batches(PairData(16), [4, 4, 4, 4]), cached=True)
    assert len(seen) == 4
    for other in seen[1:]:  # the grad pass replays each micro-batch's dropout mask
        torch.testing.assert_close(other, seen[0], atol=0, rtol=0)
