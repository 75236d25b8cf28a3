"""DDP data splitting: no sample is dropped (the epoch is padded to whole global batches), and
`training.json` records world size, per-rank and global batch and the backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sonofm.data.shards import export_shards
from sonofm.errors import DataError
from sonofm.train.sampler import ResumableBatchSampler, plan_epoch
from tests.data.test_shards_stream import make_dataset
from tests.train import ddp_data_worker

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_case_pads_instead_of_dropping_109_images() -> None:
    # 237 training images, 2 processes x batch 64 = global batch 128
    plan = plan_epoch(237, 64, 2)
    assert (plan.steps, plan.used, plan.padded, plan.dropped) == (2, 256, 19, 0)
    drop = plan_epoch(237, 64, 2, tail="drop")
    assert (drop.steps, drop.dropped) == (1, 109)  # what DistributedSampler(drop_last) did, now reported
    ranks = [ResumableBatchSampler(237, 64, seed=3, rank=r, world_size=2) for r in range(2)]
    for s in ranks:
        s.set_epoch(4)
    batches = [list(s) for s in ranks]
    assert [len(b) for b in batches] == [2, 2] and all(len(x) == 64 for b in batches for x in b)
    seen = [i for b in batches for x in b for i in x]
    assert set(seen) == set(range(237)) and len(seen) == 256
    # a global batch never holds one sample twice (a contrastive loss would score it against itself)
    for step in range(2):
        both = batches[0][step] + batches[1][step]
        assert len(set(both)) == len(both)


def test_accumulation_pads_to_whole_optimizer_steps() -> None:
    plan = plan_epoch(100, 8, 2, accum_steps=3)  # 48 per optimizer step
    assert (plan.steps, plan.used, plan.padded) == (9, 144, 44)
    with pytest.raises(DataError, match="has 40 samples but one optimizer step needs 48"):
        plan_epoch(40, 8, 2, accum_steps=3)


def test_two_gloo_processes_see_every_sample_and_record_the_split(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path / "folder", n=30)
    shards = tmp_path / "shards"
    export_shards(folder, shards, shard_size=7)
    out = tmp_path / "out"
    out.mkdir()
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--rdzv_backend", "c10d",
        "--rdzv_endpoint", "localhost:0", str(Path(ddp_data_worker.__file__)),
        str(folder), str(shards), str(out),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    seen = json.loads((out / "seen.json").read_text())
    every = {f"s{i:03d}" for i in range(30)}
    for source in ("folder", "shards"):
        per_rank = seen[source]
        # 30 images at 2 x batch 4: 4 steps of 8 per epoch, 2 repeats; nothing dropped
        assert [len(ids) for ids in per_rank] == [16, 16], source
        assert set(per_rank[0]) | set(per_rank[1]) == every, source
    training = json.loads((out / "pretrain" / "model" / "training.json").read_text())
    dist = training["distributed"]
    assert dist["world_size"] == 2 and dist["backend"] == "gloo" and dist["streaming"]
    assert dist["per_rank_batch"] == 4 and dist["global_batch"] == 8
    assert dist["epoch_plan"]["padded"] == 2 and dist["epoch_plan"]["dropped"] == 0
