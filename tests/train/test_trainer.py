"""The training loop end to end on a stand-in model: metrics, checkpoints, NaN, early stop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sonofm.config import TrainerConfig
from sonofm.errors import DataError, UserError
from sonofm.losses import ClipLoss
from sonofm.train import ContrastiveStep, Trainer, TrainingDiverged, load_checkpoint
from tests.train.standin import PairData, StandInDual, collate


def _config(**kw) -> TrainerConfig:
    base = dict(batch_size=8, epochs=2, lr=5e-3, warmup_steps=2, log_every=1, progress=False, device="cpu")
    return TrainerConfig(**{**base, **kw})


def _fit(tmp_path: Path, data: PairData | None = None, step=None, **kw):
    torch.manual_seed(0)
    trainer = Trainer(
        StandInDual(),
        step or ContrastiveStep(ClipLoss()),
        _config(**kw),
        tmp_path,
        data or PairData(48),
        collate_fn=collate,
    )
    return trainer, trainer.fit()


def test_fit_writes_metrics_and_checkpoints_and_learns(tmp_path: Path) -> None:
    trainer, result = _fit(tmp_path, epochs=6, tensorboard=True)
    assert result.step == 6 * 6 and result.epoch == 6
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 37))
    first, last = rows[0], rows[-1]
    for key in ("lr", "loss", "contrastive_loss", "grad_norm", "samples_per_s", "logit_scale", "epoch"):
        assert key in first, key
    assert last["loss"] < first["loss"]  # it learns the synthetic pairing
    assert first["lr"] == pytest.approx(5e-3 / 2)
    state = load_checkpoint(tmp_path / "checkpoints" / "latest.pt")
    assert state["step"] == 36 and state["epoch"] == 6 and state["batch_in_epoch"] == 0
    for name, p in trainer.raw_model.state_dict().items():
        assert torch.equal(state["model"][name], p)
    assert any((tmp_path / "tensorboard").iterdir())


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    class NanAfter(ContrastiveStep):
        calls = 0

        def loss(self, outputs):
            self.calls += 1
            terms = super().loss(outputs)
            if self.calls > 3:
                terms["contrastive_loss"] = terms["contrastive_loss"] * float("nan")
            return terms

    torch.manual_seed(0)
    trainer = Trainer(
        StandInDual(),
        NanAfter(ClipLoss()),
        _config(checkpoint_every=1),
        tmp_path,
        PairData(48),
        collate_fn=collate,
    )
    with pytest.raises(
        TrainingDiverged, match=r"loss became nan at step 4 .*last good checkpoint is .*latest\.pt"
    ):
        trainer.fit()
    assert isinstance(TrainingDiverged("x"), UserError)  # the CLI prints it as one line
    state = load_checkpoint(tmp_path / "checkpoints" / "latest.pt")
    assert state["step"] == 3
    for name, p in trainer.raw_model.state_dict().items():  # the NaN step never touched the weights
        assert torch.equal(state["model"][name], p), name
        assert torch.isfinite(p).all()


def test_early_stopping_and_best_checkpoint(tmp_path: Path) -> None:
    scores = iter([0.5, 0.7, 0.6, 0.65, 0.69, 0.9])

    def evaluate(model, epoch):
        return {"val/r1": next(scores)}

    torch.manual_seed(0)
    cfg = _config(epochs=6, early_stop_metric="val/r1", patience=3)
    trainer = Trainer(
        StandInDual(),
        ContrastiveStep(ClipLoss()),
        cfg,
        tmp_path,
        PairData(48),
        collate_fn=collate,
        evaluate=evaluate,
    )
    result = trainer.fit()
    assert result.stopped_early and result.epoch == 5 and result.best_metric == 0.7
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert best["epoch"] == 2 and best["trainer"]["best_metric"] == 0.7
    val_rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines() if "val/r1" in x]
    assert [r["val/r1"] for r in val_rows] == [0.5, 0.7, 0.6, 0.65, 0.69]


def test_undecodable_samples_are_skipped_and_counted(tmp_path: Path) -> None:
    _, result = _fit(tmp_path, data=PairData(48, broken=(3, 17, 40)), epochs=2)
    assert result.skipped_samples == 6  # 3 broken images, seen once per epoch
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["skipped_samples"] == 6


def test_dataset_smaller_than_one_step_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"has 5 samples but one optimizer step needs 8"):
        Trainer(
            StandInDual(), ContrastiveStep(ClipLoss()), _config(), tmp_path, PairData(5), collate_fn=collate
        )


def test_fp16_on_cpu_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
        Trainer(
            StandInDual(),
            ContrastiveStep(ClipLoss()),
            _config(precision="fp16"),
            tmp_path,
            PairData(48),
            collate_fn=collate,
        )


def test_bf16_autocast_trains_with_fp32_loss(tmp_path: Path) -> None:
    trainer, result = _fit(tmp_path, precision="bf16", epochs=1)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(isinstance(r["loss"], float) for r in rows) and result.step == 6
    assert all(p.dtype == torch.float32 for p in trainer.raw_model.parameters())


def test_resume_missing_checkpoint_is_a_user_error(tmp_path: Path) -> None:
    trainer = Trainer(
        StandInDual(), ContrastiveStep(ClipLoss()), _config(), tmp_path, PairData(48), collate_fn=collate
    )
    with pytest.raises(UserError, match="no checkpoint at"):
        trainer.fit(resume="latest")


def test_resume_with_more_epochs_follows_the_new_schedule(tmp_path: Path) -> None:
    from sonofm.train import WarmupCosine

    _fit(tmp_path, epochs=2)  # 12 steps; the cosine ends at lr 0
    torch.manual_seed(0)
    trainer = Trainer(
        StandInDual(),
        ContrastiveStep(ClipLoss()),
        _config(epochs=4),
        tmp_path,
        PairData(48),
        collate_fn=collate,
    )
    trainer.fit(resume="latest")
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    resumed = [r for r in rows if r["step"] == 13][0]
    assert resumed["lr"] == pytest.approx(5e-3 * WarmupCosine(2, 24)(12)) and resumed["lr"] > 1e-3


def test_early_stop_target_stops_when_reached(tmp_path: Path) -> None:
    scores = iter([0.2, 0.6, 1.0, 1.0, 1.0])
    torch.manual_seed(0)
    cfg = _config(epochs=5, early_stop_metric="val/r1", early_stop_target=1.0)
    trainer = Trainer(
        StandInDual(),
        ContrastiveStep(ClipLoss()),
        cfg,
        tmp_path,
        PairData(48),
        collate_fn=collate,
        evaluate=lambda model, epoch: {"val/r1": next(scores)},
    )
    result = trainer.fit()
    assert result.stopped_early and result.epoch == 3 and result.best_metric == 1.0


def test_stream_resume_mid_epoch_is_bit_identical(tmp_path: Path) -> None:
    from tests.train.standin import PairStream

    class Crash(Exception):
        pass

    def crash_at_step_5(trainer: Trainer, record: dict) -> None:
        if trainer.step == 5:
            raise Crash

    cfg = _config(epochs=3, batch_size=4, accum_steps=2, checkpoint_every=1)  # 5 steps per epoch
    finals = []
    for run, callbacks in (("straight", []), ("crashed", [crash_at_step_5])):
        torch.manual_seed(0)
        trainer = Trainer(
            StandInDual(dropout=0.3),
            ContrastiveStep(ClipLoss()),
            cfg,
            tmp_path / run,
            PairStream(40),
            collate_fn=collate,
            on_step=callbacks,
        )
        if callbacks:
            with pytest.raises(Crash):
                trainer.fit()
            torch.manual_seed(999)  # the resumed run must not depend on the process's RNG state
            trainer = Trainer(
                StandInDual(dropout=0.3),
                ContrastiveStep(ClipLoss()),
                cfg,
                tmp_path / run,
                PairStream(40),
                collate_fn=collate,
            )
            trainer.fit(resume="latest")
        else:
            trainer.fit()
        assert trainer.step == 15
        finals.append(trainer.raw_model.state_dict())
    for name in finals[0]:
        assert torch.equal(finals[0][name], finals[1][name]), name


def test_stream_that_runs_dry_ends_the_epoch(tmp_path: Path) -> None:
    from tests.train.standin import PairStream

    # claims 48 samples (6 steps of 8) but yields 40: the epoch ends after 5 steps
    trainer = Trainer(
        StandInDual(),
        ContrastiveStep(ClipLoss()),
        _config(epochs=2),
        tmp_path,
        PairStream(40, length=48),
        collate_fn=collate,
    )
    result = trainer.fit()
    assert result.epoch == 2 and result.step == 10
