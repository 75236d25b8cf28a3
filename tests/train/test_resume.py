"""Kill a training process with SIGKILL half way; resuming must give bit-identical weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sonofm.errors import UserError
from sonofm.train import load_checkpoint
from tests.train import resume_worker

ROOT = Path(__file__).resolve().parents[2]
WORKER = str(Path(resume_worker.__file__))
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _run(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, WORKER, *args], env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _latest_step(run: Path) -> int:
    path = run / "checkpoints" / "latest.pt"
    return load_checkpoint(path)["step"] if path.is_file() else -1


def _losses(run: Path) -> list[tuple[int, float]]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows]


def test_sigkill_then_resume_is_bit_identical(tmp_path: Path) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    _run(str(straight), "run")

    proc = subprocess.Popen(
        [sys.executable, WORKER, str(killed), "run", "7"], env=ENV, cwd=ROOT, stderr=subprocess.PIPE
    )
    deadline = time.time() + 90
    while _latest_step(killed) < 7:  # half way, mid-epoch (5 steps per epoch)
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.time() < deadline, "worker made no progress"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "final.pt").exists()
    interrupted_at = _latest_step(killed)
    assert 7 <= interrupted_at < resume_worker.TOTAL_STEPS

    _run(str(killed), "resume")
    a = torch.load(straight / "final.pt", weights_only=True)
    b = torch.load(killed / "final.pt", weights_only=True)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs after resume from step {interrupted_at}"
    # the resumed log reads like the uninterrupted one (same steps, same losses)
    assert _losses(killed) == _losses(straight)


def test_kill_during_checkpoint_write_keeps_previous_checkpoint(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, WORKER, str(tmp_path), "torn"], env=ENV, cwd=ROOT, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    state = load_checkpoint(tmp_path / "checkpoints" / "latest.pt")
    assert state["step"] == 1 and torch.equal(state["w"], torch.arange(1000))
    leftovers = list((tmp_path / "checkpoints").glob(".latest.pt.tmp-*"))
    assert len(leftovers) == 1  # the torn temporary, never renamed into place


def test_truncated_checkpoint_is_reported_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 not really a checkpoint")
    with pytest.raises(UserError, match=r"bad\.pt: not a readable sonofm checkpoint"):
        load_checkpoint(bad)
