"""Accumulation with feature caching computes the big-batch contrastive gradient exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sonofm.config import TrainerConfig
from sonofm.losses import build_contrastive_loss
from sonofm.losses.label_text import LabelTextLoss
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


class _LabelTextStep(ContrastiveStep):
    """CLIP plus the label_text term, whose label-text features are one row per label (4 here,
    as many as a micro-batch, so only `shared_outputs` tells them apart from per-sample outputs)."""

    shared_outputs = ("label_text_features",)
    label_ids = torch.tensor(
        [[1, 2, 3, 0, 0, 0], [4, 5, 6, 0, 0, 0], [7, 8, 0, 0, 0, 0], [9, 10, 11, 12, 0, 0]]
    )

    def forward(self, model: torch.nn.Module, batch: dict) -> dict:
        out = dict(super().forward(model, batch))
        mask = self.label_ids.ne(0).long()
        out["label_text_features"] = model(batch["image"][:1], self.label_ids, mask)["text_features"]
        out["label_text_targets"] = batch["label_text_targets"]
        return out

    def loss(self, outputs: dict) -> dict:
        return {**super().loss(outputs), **LabelTextLoss([(0, 2), (2, 4)])(outputs)}


def _with_targets(batches: list[dict], offset: int = 0) -> list[dict]:
    for b in batches:
        n = len(b["image"])
        idx = torch.arange(offset, offset + n)
        y = torch.zeros(n, 4, dtype=torch.float64)
        y[torch.arange(n), idx % 2] = 1
        y[torch.arange(n), 2 + (idx // 2) % 2] = 1
        b["label_text_targets"] = y
        offset += n
    return batches


def test_cached_accumulation_counts_shared_outputs_once(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = StandInDual(dropout=0.0).double()
    cfg = TrainerConfig(batch_size=4, accum_steps=4, progress=False, device="cpu")
    step = _LabelTextStep(build_contrastive_loss("clip"))
    trainer = Trainer(model, step, cfg, tmp_path, PairData(16), collate_fn=collate)
    data = PairData(16)
    big = _grads(trainer, _with_targets(_batches(data, [16])), cached=False)
    cached = _grads(trainer, _with_targets(_batches(data, [4, 4, 4, 4])), cached=True)
    for name in big:
        torch.testing.assert_close(cached[name], big[name], atol=1e-5, rtol=0, msg=name)
    # without the declaration the (4, D) label features would be glued into a (16, D) block
    step.shared_outputs = ()
    with pytest.raises(ValueError, match="target columns but 16 label texts"):
        _grads(trainer, _with_targets(_batches(data, [4, 4, 4, 4])), cached=True)
