"""``train.precision=auto``: bf16 only where the hardware computes it natively."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sonofm.config import TrainerConfig
from sonofm.inference import precision as prec
from sonofm.losses import ClipLoss
from sonofm.train import ContrastiveStep, Trainer
from tests.train.standin import PairData, StandInDual, collate

X86_HEAD = (
    "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 avx512f {extra}\n\nprocessor\t: 1\n"
)


@pytest.mark.parametrize(
    ("text", "native"),
    [
        (X86_HEAD.format(extra="avx512_bf16"), True),
        (X86_HEAD.format(extra="amx_bf16 amx_tile"), True),
        (X86_HEAD.format(extra="avx512_vnni"), False),  # AVX512 without bf16: oneDNN would emulate
        ("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n", True),  # aarch64 Linux
        ("processor\t: 0\nFeatures\t: fp asimd\n", False),
    ],
)
def test_native_bf16_is_read_from_cpu_flags(tmp_path: Path, text: str, native: bool) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(text)
    assert prec.cpu_has_native_bf16(str(info)) is native


def test_auto_resolves_by_device_and_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: True)
    assert prec.resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: False)
    assert prec.resolve_precision("auto", cpu) == "fp32"
    for p in ("fp32", "bf16", "fp16"):  # explicit choices pass through untouched
        assert prec.resolve_precision(p, cpu) == p
    with pytest.raises(ValueError, match="expected auto or one of"):
        prec.resolve_precision("int8", cpu)


@pytest.mark.parametrize("native", [True, False])
def test_trainer_autocasts_as_auto_decided(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: native)
    config = TrainerConfig(
        batch_size=8, epochs=1, lr=5e-3, warmup_steps=1, progress=False, device="cpu", precision="auto"
    )
    trainer = Trainer(
        StandInDual(), ContrastiveStep(ClipLoss()), config, tmp_path, PairData(16), collate_fn=collate
    )
    assert trainer.precision == ("bf16" if native else "fp32")
    with trainer._autocast():
        out = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    assert out.dtype == (torch.bfloat16 if native else torch.float32)
