"""WebDataset shards: the same dataset as tar streams, for data that outgrows a folder.

`export_shards` packs a dataset directory into `<split>-NNNNNN.tar` files (PNG image, PNG mask,
JSON row per sample) plus `shards.json` (index with counts) and a copy of `dataset.json`.
`ShardDataset` streams them back as the same item dicts `UltrasoundDataset` gives, splitting
shards over DDP ranks and loader workers.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import random
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds

from sonofm.data.augment import RandomApply
from sonofm.data.dataset import TextFn, build_item, load_table, manifest_root, read_grayscale, read_mask
from sonofm.errors import DataError, UserError

log = logging.getLogger(__name__)
INDEX_NAME = "shards.json"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _png_bytes(path: Path) -> bytes:
    return path.read_bytes()


def export_shards(
    data: str | Path, out: str | Path, *, shard_size: int = 1000, splits: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """Pack a dataset directory into WebDataset shards; atomic (temp dir renamed at the end).

    Samples whose image file is missing are skipped and reported in the index.
    """
    data, out = Path(data), Path(out)
    if shard_size <= 0:
        raise UserError(f"--shard-size must be positive, got {shard_size}")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"output directory {out} is not empty; choose a new --out")
    table = load_table(data, None)
    root = manifest_root(data)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".shards-", dir=out.parent))
    index: dict[str, Any] = {"source": str(data), "shard_size": shard_size, "splits": {}, "skipped": []}
    try:
        for split in splits or tuple(sorted(set(table["split"]))):
            rows = table[table["split"] == split].to_dict("records")
            pattern = str(tmp / f"{split}-%06d.tar")
            count = 0
            with wds.ShardWriter(pattern, maxcount=shard_size, verbose=0) as sink:
                for row in rows:
                    try:
                        sample: dict[str, Any] = {
                            "__key__": str(row["id"]).replace(".", "_"),
                            "png": _png_bytes(root / row["image"]),
                        }
                        if isinstance(row.get("mask"), str) and row["mask"]:
                            sample["mask.png"] = _png_bytes(root / row["mask"])
                    except OSError as err:
                        index["skipped"].append({"id": row.get("id"), "reason": str(err)})
                        continue
                    sample["json"] = json.dumps(_jsonable(row)).encode()
                    sink.write(sample)
                    count += 1
            shards = sorted(p.name for p in tmp.glob(f"{split}-*.tar"))
            index["splits"][split] = {"samples": count, "shards": shards}
        if (root / "dataset.json").exists():
            shutil.copy2(root / "dataset.json", tmp / "dataset.json")
        (tmp / INDEX_NAME).write_text(json.dumps(index, indent=2))
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if index["skipped"]:
        log.warning("skipped %d samples whose files could not be read", len(index["skipped"]))
    return index


def read_index(shard_dir: str | Path) -> dict[str, Any]:
    path = Path(shard_dir) / INDEX_NAME
    if not path.exists():
        raise DataError(f"{shard_dir}: no {INDEX_NAME}; is this a directory written by `sonofm data shard`?")
    return json.loads(path.read_text())


class ShardDataset(torch.utils.data.IterableDataset):
    """Stream one split of a shard directory as `UltrasoundDataset`-style items."""

    def __init__(
        self,
        shard_dir: str | Path,
        split: str = "train",
        *,
        image_size: int | None = None,
        augment: RandomApply | None = None,
        text: str | TextFn = "report",
        shuffle_buffer: int = 0,
        seed: int = 0,
    ) -> None:
        self.dir = Path(shard_dir)
        index = read_index(shard_dir)
        if split not in index["splits"]:
            raise DataError(f"{shard_dir}: no split {split!r} (have {sorted(index['splits'])})")
        self.urls = [str(self.dir / s) for s in index["splits"][split]["shards"]]
        self.length = int(index["splits"][split]["samples"])
        self.image_size, self.augment, self.text = image_size, augment, text
        self.shuffle_buffer, self.seed, self.epoch = shuffle_buffer, seed, 0

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _decode(self, sample: dict[str, Any]) -> dict[str, Any] | None:
        row = json.loads(sample["json"])
        try:
            image = read_grayscale(io.BytesIO(sample["png"]))
            mask = read_mask(io.BytesIO(sample["mask.png"])) if "mask.png" in sample else None
        except (OSError, ValueError) as err:
            log.warning("skipping %s: cannot decode (%s)", row.get("id"), err)
            return None
        rng = np.random.default_rng([self.seed, self.epoch, zlib.crc32(str(row["id"]).encode())])
        text = self.text(row, rng) if callable(self.text) else str(row.get(self.text) or "")
        return build_item(row, image, mask, text, self.image_size, self.augment, rng)

    def __iter__(self):
        pipeline = wds.WebDataset(
            self.urls,
            shardshuffle=len(self.urls) if self.shuffle_buffer else False,
            nodesplitter=wds.split_by_node,
            workersplitter=wds.split_by_worker,
            seed=self.seed + self.epoch,
            empty_check=False,
        )
        if self.shuffle_buffer:
            pipeline = pipeline.shuffle(self.shuffle_buffer, rng=random.Random(self.seed + self.epoch))
        for sample in pipeline:
            yield self._decode(sample)
