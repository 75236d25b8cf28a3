"""Choosing a training precision for the hardware at hand (``train.precision=auto``), and autocast.

Below the jobs: the training loop, embedding and task prediction run under it
(`sonofm.train.precision` re-exports it).

bf16 autocast is only a win where the hardware computes in bf16 natively: CUDA GPUs from Ampere on,
and CPUs with AVX512-BF16 or AMX (measured on such a 2-core EPYC: the tiny preset trains ~1.5x
faster than fp32). On other CPUs oneDNN emulates bf16, which can be slower than fp32, so ``auto``
stays at fp32 there. fp16 is never chosen automatically on CPU (it needs a GradScaler on CUDA).
"""

from __future__ import annotations

import functools
import logging
import platform
import subprocess
from pathlib import Path

import torch

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16")
# /proc/cpuinfo flags of x86 CPUs with bf16 arithmetic (dot products / tile multiply) in hardware.
_X86_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpu_flags(cpuinfo: str) -> set[str]:
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 / aarch64 Linux
            return set(value.split())
    return set()


@functools.cache
def cpu_has_native_bf16(cpuinfo_path: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU multiplies bf16 in hardware (x86 AVX512-BF16/AMX, Arm BF16 extension)."""
    path = Path(cpuinfo_path)
    if path.is_file():
        flags = _cpu_flags(path.read_text(errors="replace"))
        return any(f in flags for f in _X86_BF16_FLAGS) or "bf16" in flags
    if platform.system() == "Darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return False
        return out == "1"
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``fp32``/``bf16``/``fp16`` for ``precision`` on ``device``; ``auto`` picks the fastest safe one."""
    if precision in PRECISIONS:
        return precision
    if precision != "auto":
        raise ValueError(f"precision {precision!r}: expected auto or one of {list(PRECISIONS)}")
    if device.type == "cuda":
        chosen = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    elif device.type == "cpu":
        chosen = "bf16" if cpu_has_native_bf16() else "fp32"
    else:
        chosen = "fp32"
    log.debug("precision auto -> %s on %s", chosen, device)
    return chosen


def autocast(precision: str, device: torch.device) -> torch.autocast:
    """The autocast context of ``precision`` (``auto`` resolved) on ``device``; fp32 disables autocast."""
    precision = resolve_precision(precision, device)
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


# Attention kernels of the transformers towers, measured on a one-block ViT (width 192, 3 heads,
# forward + backward, one thread, 2-core Intel Xeon with AMX-BF16; inference alone is timed by
# benchmarks/eval.py, where the two kernels are within 10% of each other):
#   tokens   fp32 eager/sdpa   bf16 eager/sdpa    (time ratio, < 1: eager faster)
#     65          0.94              0.61
#    197          1.07              0.81
#    577          1.28              1.11
# torch's fused CPU attention has a slow bf16 backward at short sequences; at 65 tokens it was
# 20% of the whole tiny-preset bf16 step. On CUDA the fused kernels win everywhere.
_CPU_EAGER_MAX_TOKENS = {"fp32": 128, "bf16": 384, "fp16": 384}


def choose_attention(precision: str, device: torch.device, tokens: int) -> str:
    """``sdpa`` or ``eager`` for a transformers tower at ``tokens`` tokens (measured table above)."""
    precision = resolve_precision(precision, device)
    if device.type != "cpu":
        return "sdpa"
    return "eager" if tokens <= _CPU_EAGER_MAX_TOKENS[precision] else "sdpa"
