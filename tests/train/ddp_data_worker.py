"""torchrun worker for test_ddp_data.py: what 2 gloo ranks train on, from a folder and shards.

usage: torchrun --nproc_per_node 2 ddp_data_worker.py FOLDER SHARDS OUT
Writes OUT/seen.json (the ids each rank trained on, per source) and OUT/pretrain (a
`sonofm pretrain` run from the shards, for its training.json).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from sonofm.config import PretrainConfig, resolve_config
from sonofm.pretrain.job import pretrain
from sonofm.train.distributed import cleanup, init_distributed
from tests.train.test_shard_training import _trainer


def seen_ids(data: Path, out: Path) -> list[list[str]]:
    """Every id this rank's batches held over one epoch, gathered from all ranks."""
    trainer = _trainer(data, out, shuffle=True, epochs=1)
    forward = trainer.step_fn.forward
    seen: list[str] = []

    def recording(model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
        seen.extend(batch["id"])
        return forward(model, batch)

    trainer.step_fn.forward = recording  # type: ignore[method-assign]
    trainer.fit()
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, seen)
    return gathered


def main() -> None:
    folder, shards, out = (Path(a) for a in sys.argv[1:4])
    info = init_distributed("cpu")
    seen = {"folder": seen_ids(folder, out / "folder"), "shards": seen_ids(shards, out / "shards")}
    model_yaml = out / "tiny.yaml"
    if info.is_main:
        import yaml

        from tests.tiny_models import TINY_DUAL_ENCODER

        model_yaml.write_text(yaml.safe_dump(TINY_DUAL_ENCODER))
        (out / "seen.json").write_text(json.dumps(seen))
    dist.barrier()
    overrides = [f"data.path={shards}", f"model={model_yaml}", "train.epochs=1", "train.batch_size=4"]
    overrides += ["train.progress=false", "train.warmup_steps=1", "train.device=cpu", "data.val_batch_size=4"]
    pretrain(
        resolve_config(PretrainConfig, preset="tiny", kind="train", overrides=overrides), out / "pretrain"
    )
    cleanup()


if __name__ == "__main__":
    main()
