"""`sonofm finetune` under torchrun (2 gloo processes): trains, saves one model, writes results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.finetune.conftest import TINY_OVERRIDES

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_finetune_under_torchrun(heart_data, tmp_path) -> None:
    out = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--rdzv_backend", "c10d", "--rdzv_endpoint", "localhost:0", "-m", "sonofm.cli",
        "finetune", "--model", "tiny", "--data", str(heart_data), "--task", "classify", "--adapter", "full",
        "--out", str(out), "--seeds", "1", "--epochs", "1", "--batch-size", "4",
        *TINY_OVERRIDES, "image.num_hidden_layers=4", "task_options.target=view", "task_options.dim=16",
        "train.progress=false",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads((out / "results.json").read_text())
    assert res["per_seed"][0]["steps"] >= 1 and "acc" in res["test"]
    assert (out / "seed-1" / "model" / "model.safetensors").is_file()
