"""``train.compile``: wrap the model in ``torch.compile`` where it can work, else keep it eager.

Checked up front: TorchDynamo supports this Python, and on CPU inductor has a C++ compiler to
call. Anything that still fails (a graph break that errors, a backend crash) surfaces on the first
forward pass; :class:`~sonofm.train.trainer.Trainer` then unwraps the model and continues eagerly.
Whether compiling pays is measured by ``benchmarks/pretrain.py --compile``.
"""

from __future__ import annotations

import logging
import os
import shutil

import torch
from torch import nn

log = logging.getLogger(__name__)


def compile_unsupported(device: torch.device | None = None) -> str | None:
    """Why ``torch.compile`` cannot run here, or None if it should."""
    try:
        import torch._dynamo as dynamo  # lazy: slow to import (seconds); only train.compile needs it
    except ImportError as err:  # pragma: no cover - every torch 2.x has it
        return f"torch._dynamo is unavailable ({err})"
    if not dynamo.is_dynamo_supported():
        return "TorchDynamo does not support this Python version/platform"
    if (device is None or device.type == "cpu") and not any(
        shutil.which(c) for c in (os.environ.get("CXX", "g++"), "g++", "c++", "clang++")
    ):
        return "no C++ compiler found (inductor compiles CPU kernels with one; set CXX)"
    return None


def compile_model(model: nn.Module, device: torch.device | None = None) -> nn.Module:
    """``torch.compile(model)``, or ``model`` itself (with a warning) where compiling is unsupported."""
    reason = compile_unsupported(device)
    if reason is not None:
        log.warning("train.compile ignored: %s", reason)
        return model
    return torch.compile(model)
