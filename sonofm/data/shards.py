"""WebDataset shards: the same dataset as tar streams, for data that outgrows a folder.

`export_shards` packs a dataset directory into `<split>-NNNNNN.tar` files (PNG image, PNG mask,
JSON row per sample) plus `shards.json` (index: shard names and their sample counts), one
`<split>-rows.jsonl` per split (the manifest rows, so jobs see the table without reading the
tars) and a copy of `dataset.json`.

`ShardDataset` streams one split back as the same item dicts `UltrasoundDataset` gives, in an
order that is a pure function of (seed, epoch): shards in a seeded order, samples shuffled
within windows of `shuffle_buffer`, the epoch padded to whole optimizer steps, each rank a
contiguous block of it (so a rank reads about 1/world of the shards) and each loader worker
every n-th batch of its rank's block (so batches come out in the same order for any worker
count). Every position is known in advance, so a resumed run starts at its saved batch without
decoding what came before. Augmentation and caption sampling are keyed on (seed, epoch, row
index in the split) exactly as in `UltrasoundDataset`, so shards and folder train identically
on the same order.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import webdataset as wds

from sonofm.data.augment import RandomApply
from sonofm.data.dataset import (
    TextFn,
    UltrasoundDataset,
    build_item,
    load_table,
    manifest_root,
)
from sonofm.data.manifest import DatasetDir
from sonofm.data.transforms import read_gray, read_label_map
from sonofm.errors import DataError, UserError

log = logging.getLogger(__name__)
INDEX_NAME = "shards.json"
ROWS_SUFFIX = "-rows.jsonl"


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
            written: list[str] = []
            with wds.ShardWriter(pattern, maxcount=shard_size, verbose=0) as sink:
                for row in rows:
                    try:
                        sample: dict[str, Any] = {
                            "__key__": str(row["id"]).replace(".", "_"),
                            "png": (root / row["image"]).read_bytes(),
                        }
                        if isinstance(row.get("mask"), str) and row["mask"]:
                            sample["mask.png"] = (root / row["mask"]).read_bytes()
                    except OSError as err:
                        index["skipped"].append({"id": row.get("id"), "reason": str(err)})
                        continue
                    line = json.dumps(_jsonable(row))
                    sample["json"] = line.encode()
                    sink.write(sample)
                    written.append(line)
            shards = sorted(p.name for p in tmp.glob(f"{split}-*.tar"))
            counts = [min(shard_size, len(written) - i * shard_size) for i in range(len(shards))]
            (tmp / f"{split}{ROWS_SUFFIX}").write_text("".join(f"{line}\n" for line in written))
            index["splits"][split] = {
                "samples": len(written),
                "shards": shards,
                "counts": counts,
                "rows": f"{split}{ROWS_SUFFIX}",
            }
        if DatasetDir.card_file(root).exists():
            shutil.copy2(DatasetDir.card_file(root), DatasetDir.card_file(tmp))
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


def is_shard_dir(path: str | Path) -> bool:
    """Whether ``path`` is a directory written by `sonofm data shard` (it holds shards.json)."""
    return (Path(path) / INDEX_NAME).is_file()


def read_index(shard_dir: str | Path) -> dict[str, Any]:
    path = Path(shard_dir) / INDEX_NAME
    if not path.exists():
        raise DataError(f"{shard_dir}: no {INDEX_NAME}; is this a directory written by `sonofm data shard`?")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: invalid JSON ({err.msg} at line {err.lineno})") from None


# ------------------------------------------------------------------------------ reading a tar


Member = tuple[int, int]  # (offset of the data in the tar, size)


def member_index(path: str | Path) -> list[tuple[str, dict[str, Member]]]:
    """The samples of one tar in file order: key -> {extension: (offset, size)} (headers only)."""
    samples: list[tuple[str, dict[str, Member]]] = []
    try:
        with tarfile.open(path, "r:") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                base = m.name.rsplit("/", 1)[-1]
                key, _, ext = base.partition(".")
                if not samples or samples[-1][0] != key:
                    samples.append((key, {}))
                samples[-1][1][ext] = (m.offset_data, m.size)
    except (OSError, tarfile.TarError) as err:
        raise DataError(f"{path}: cannot read the shard ({err})") from err
    return samples


def _read(f: io.BufferedReader, member: Member) -> bytes:
    f.seek(member[0])
    return f.read(member[1])


# ------------------------------------------------------------------------------ epoch order


def epoch_sequence(
    counts: list[int], *, shuffle: bool, seed: int, epoch: int, window: int
) -> tuple[np.ndarray, np.ndarray]:
    """(shard, sample-in-shard) of every sample of one epoch, in training order.

    Shuffling permutes the shards, then the samples within consecutive windows of ``window``
    (what a WebDataset shuffle buffer approximates, but exactly reproducible and seekable).
    """
    shard_order = np.arange(len(counts))
    if shuffle:
        shard_order = np.random.default_rng([seed, epoch]).permutation(len(counts))
    shard = np.concatenate(
        [np.full(counts[s], s, dtype=np.int64) for s in shard_order] or [np.zeros(0, np.int64)]
    )
    within = np.concatenate(
        [np.arange(counts[s], dtype=np.int64) for s in shard_order] or [np.zeros(0, np.int64)]
    )
    if shuffle and window > 1:
        rng = np.random.default_rng([seed, epoch, 1])
        for start in range(0, len(shard), window):
            perm = start + rng.permutation(min(window, len(shard) - start))
            shard[start : start + len(perm)] = shard[perm]
            within[start : start + len(perm)] = within[perm]
    return shard, within


def rank_block(n_used: int, rank: int, world_size: int) -> slice:
    """Rank ``rank``'s contiguous share of a padded epoch of ``n_used`` positions."""
    per_rank = n_used // world_size
    return slice(rank * per_rank, (rank + 1) * per_rank)


class ShardDataset(torch.utils.data.IterableDataset):
    """Stream one split of a shard directory as `UltrasoundDataset`-style items.

    Unconfigured it yields every sample once (one process). The trainer calls ``configure`` with
    its epoch plan (:func:`sonofm.train.sampler.plan_epoch`) and rank, then ``set_epoch`` and
    ``set_start`` (the micro-batch to start from) before each epoch.
    """

    def __init__(
        self,
        shard_dir: str | Path,
        split: str = "train",
        *,
        image_size: int | None = None,
        augment: RandomApply | None = None,
        text: str | TextFn = "report",
        with_masks: bool = True,
        shuffle: bool = False,
        shuffle_buffer: int = 1000,
        seed: int = 0,
    ) -> None:
        self.dir = Path(shard_dir)
        index = read_index(shard_dir)
        if split not in index["splits"]:
            raise DataError(f"{shard_dir}: no split {split!r} (have {sorted(index['splits'])})")
        info = index["splits"][split]
        self.split = split
        self.paths = [self.dir / s for s in info["shards"]]
        missing = [str(p) for p in self.paths if not p.is_file()]
        if missing:
            raise DataError(f"{shard_dir}: shards listed in {INDEX_NAME} are missing: {missing[:3]}")
        self.counts: list[int] = list(info.get("counts") or [len(member_index(p)) for p in self.paths])
        self.length = sum(self.counts)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        self.rows_file = self.dir / info["rows"] if info.get("rows") else None
        self.image_size, self.augment, self.text, self.with_masks = image_size, augment, text, with_masks
        self.shuffle, self.shuffle_buffer, self.seed = shuffle, shuffle_buffer, seed
        self.epoch, self.start = 0, 0
        self.rank, self.world_size, self.batch_size, self.used = 0, 1, 1, self.length
        self._members: dict[int, list[tuple[str, dict[str, Member]]]] = {}
        self._table: pd.DataFrame | None = None

    def __len__(self) -> int:
        return self.length

    # -- what the trainer sets ---------------------------------------------------------------

    def configure(self, plan: Any, *, rank: int, seed: int | None = None) -> None:
        """Follow an epoch plan (``samples, batch_size, world_size, used``) as rank ``rank``."""
        if plan.samples != self.length:
            raise ValueError(f"the plan is for {plan.samples} samples, this split has {self.length}")
        self.rank, self.world_size = rank, plan.world_size
        self.batch_size, self.used = plan.batch_size, plan.used
        if seed is not None:
            self.seed = seed

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_start(self, batch_index: int) -> None:
        """Begin the current epoch at this rank's micro-batch ``batch_index`` (resume)."""
        self.start = batch_index

    # -- metadata ----------------------------------------------------------------------------

    @property
    def table(self) -> pd.DataFrame:
        """The split's manifest rows (from `<split>-rows.jsonl`, else the tars' JSON)."""
        if self._table is None:
            if self.rows_file is not None and self.rows_file.is_file():
                rows = [json.loads(line) for line in self.rows_file.read_text().splitlines() if line]
            else:
                rows = [self._row(s, j) for s in range(len(self.paths)) for j in range(self.counts[s])]
            self._table = pd.DataFrame(rows)
        return self._table

    def _shard_members(self, shard: int) -> list[tuple[str, dict[str, Member]]]:
        if shard not in self._members:
            members = member_index(self.paths[shard])
            if len(members) != self.counts[shard]:
                raise DataError(
                    f"{self.paths[shard]}: {len(members)} samples, {INDEX_NAME} says {self.counts[shard]}"
                )
            self._members[shard] = members
        return self._members[shard]

    def _row(self, shard: int, j: int) -> dict[str, Any]:
        key, parts = self._shard_members(shard)[j]
        with open(self.paths[shard], "rb") as f:
            return json.loads(_read(f, parts["json"]))

    # -- iteration ---------------------------------------------------------------------------

    def positions(self, worker: int = 0, workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(shard, sample-in-shard) this rank's ``worker`` reads this epoch, from ``start`` on."""
        shard, within = epoch_sequence(
            self.counts, shuffle=self.shuffle, seed=self.seed, epoch=self.epoch, window=self.shuffle_buffer
        )
        reps = math.ceil(self.used / max(self.length, 1))
        shard, within = np.tile(shard, reps)[: self.used], np.tile(within, reps)[: self.used]
        block = rank_block(self.used, self.rank, self.world_size)
        shard, within = shard[block], within[block]
        b = self.batch_size
        batches = range(self.start + worker, math.ceil(len(shard) / b), workers)
        take = np.concatenate([np.arange(i * b, min((i + 1) * b, len(shard))) for i in batches] or [[]])
        take = take.astype(np.int64)
        return shard[take], within[take]

    def __iter__(self) -> Iterator[dict[str, Any] | None]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        shard, within = self.positions(worker, workers)
        handle: io.BufferedReader | None = None
        current = -1
        try:
            for s, j in zip(shard.tolist(), within.tolist(), strict=True):
                if s != current:
                    if handle is not None:
                        handle.close()
                    handle, current = open(self.paths[s], "rb"), s  # noqa: SIM115 (kept open across samples)
                yield self._decode(handle, s, j)
        finally:
            if handle is not None:
                handle.close()

    def _decode(self, f: io.BufferedReader, shard: int, j: int) -> dict[str, Any] | None:
        key, parts = self._shard_members(shard)[j]
        if "json" not in parts or "png" not in parts:
            log.warning("skipping %s in %s: no json/png member", key, self.paths[shard].name)
            return None
        row = json.loads(_read(f, parts["json"]))
        try:
            image = read_gray(io.BytesIO(_read(f, parts["png"])))
            mask = None
            if self.with_masks and "mask.png" in parts:
                mask = read_label_map(io.BytesIO(_read(f, parts["mask.png"])))
        except (OSError, ValueError, SyntaxError) as err:
            log.warning("skipping %s: cannot decode (%s)", row.get("id"), err)
            return None
        index = int(self.offsets[shard] + j)  # the row's index in the split, as in UltrasoundDataset
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return build_item(row, image, mask, self._text(row, rng), self.image_size, self.augment, rng)

    _text = UltrasoundDataset._text  # the same text modes (report, caption, column, callable)


# ------------------------------------------------------------------------------ unpacking


def unpack_shards(shard_dir: str | Path, dest: str | Path) -> Path:
    """Write a shard directory back out as a dataset directory (images/, masks/, manifest.jsonl).

    For jobs that need random access to a whole split (evaluation statistics per patient,
    few-shot sampling in fine-tuning). Atomic: a temp dir renamed to ``dest`` at the end; when
    several processes (DDP ranks) unpack at once, the first rename wins and the others keep it.
    """
    shard_dir, dest = Path(shard_dir), Path(dest)
    index = read_index(shard_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dest.parent))
    try:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        lines = []
        for split in index["splits"]:
            ds = ShardDataset(shard_dir, split)
            for s, path in enumerate(ds.paths):
                with open(path, "rb") as f:
                    for key, parts in ds._shard_members(s):
                        row = json.loads(_read(f, parts["json"]))
                        row["image"] = f"images/{key}.png"
                        (tmp / row["image"]).write_bytes(_read(f, parts["png"]))
                        if "mask.png" in parts:
                            row["mask"] = f"masks/{key}.png"
                            (tmp / row["mask"]).write_bytes(_read(f, parts["mask.png"]))
                        else:
                            row["mask"] = None
                        lines.append(json.dumps(row))
        (tmp / "manifest.jsonl").write_text("".join(f"{line}\n" for line in lines))
        if DatasetDir.card_file(shard_dir).exists():
            shutil.copy2(DatasetDir.card_file(shard_dir), DatasetDir.card_file(tmp))
        try:
            os.replace(tmp, dest)
        except OSError:
            if not (dest / "manifest.jsonl").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process (rank) unpacked it first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
