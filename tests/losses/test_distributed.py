"""Two gloo processes under torchrun give the single-process full-batch loss and gradients."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sonofm.losses import build_contrastive_loss
from tests.losses import ddp_worker

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("ddp") / "results.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "0",
        "--rdzv_backend",
        "c10d",
        "--rdzv_endpoint",
        "localhost:0",
        str(Path(ddp_worker.__file__)),
        str(out),
    ]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return torch.load(out, weights_only=True)


@pytest.mark.parametrize(("name", "with_grad", "local", "first"), ddp_worker.MODES)
def test_two_process_loss_and_grads_equal_full_batch(ddp_results, name, with_grad, local, first) -> None:
    model, x, t = ddp_worker.make_problem(name)
    loss_fn = build_contrastive_loss(name, gather_with_grad=with_grad, local_loss=local)
    loss = loss_fn(**model(x, t))["contrastive_loss"]
    loss.backward()
    key = f"{name}-{int(with_grad)}-{int(local)}-{first}"
    torch.testing.assert_close(ddp_results[f"{key}/loss"], loss.detach(), atol=1e-5, rtol=0)
    for pname, p in model.named_parameters():
        torch.testing.assert_close(ddp_results[f"{key}/{pname}"], p.grad, atol=1e-5, rtol=0, msg=pname)
