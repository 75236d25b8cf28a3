"""Two gloo processes under torchrun train exactly like one process with the combined batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.train import ddp_train_worker

ROOT = Path(__file__).resolve().parents[2]


def _torchrun(*args: str) -> None:
    worker = str(Path(ddp_train_worker.__file__))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--rdzv_backend", "c10d", "--rdzv_endpoint", "localhost:0", worker, *args,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.fixture(scope="module")
def ddp_final(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """An uninterrupted 2-process run."""
    out = tmp_path_factory.mktemp("ddp")
    _torchrun(str(out))
    return torch.load(out / "final.pt", weights_only=True)


def test_two_processes_match_one_process_with_double_batch(tmp_path: Path, ddp_final) -> None:
    # 34 pairs, one undecodable: 2 ranks x batch 4 x accum 2 = 16 per step -> 3 steps/epoch (the
    # epoch is padded with 14 repeats instead of dropping 2 samples), 2 epochs.
    ddp = ddp_final

    single = ddp_train_worker.make_trainer(tmp_path / "single", batch_size=8)
    result = single.fit()
    assert result.step == 6
    # The rank-sharded batches of one step hold the same samples as the single-process batch, and
    # the gathered loss does not depend on their order, so the runs agree to rounding error.
    for name, p in single.raw_model.state_dict().items():
        torch.testing.assert_close(ddp[name], p, atol=1e-5, rtol=0, msg=name)
    # the broken image is seen once per epoch by whichever rank draws it
    assert int(ddp["skipped"]) == result.skipped_samples


def test_two_process_resume_continues_the_same_run(tmp_path: Path, ddp_final) -> None:
    _torchrun(str(tmp_path / "split"), "3")  # both ranks exit at step 3; the checkpoint of step 2 remains
    assert not (tmp_path / "split" / "final.pt").exists()
    _torchrun(str(tmp_path / "split"), "resume")
    a = ddp_final
    b = torch.load(tmp_path / "split" / "final.pt", weights_only=True)
    for name in a:
        assert torch.equal(a[name], b[name]), name
