"""DataLoader factory: one call that gives training and evaluation batches.

`--data` is resolved here and only here: a dataset directory or manifest file opens as an
`UltrasoundDataset`, a shard directory (`sonofm data shard`) as a streaming `ShardDataset`
(`build_dataset`); jobs that need a whole table with random access get one from `open_table`
(shards are unpacked once into a cache directory for that).

Workers are seeded from the loader seed, sampling can be distributed (DDP), and tokenisation
happens in the collate function so worker processes do it in parallel with training. Pass a
light tokenizer callable (texts -> dict of tensors), not a bound method of a whole model, since
it is pickled into each worker.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import random
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, Sampler

from sonofm.data.augment import training_augment
from sonofm.data.dataset import TextFn, UltrasoundDataset, collate
from sonofm.data.manifest import read_manifest
from sonofm.data.shards import ShardDataset, is_shard_dir, read_index, unpack_shards
from sonofm.errors import UserError

# Modules every worker needs; a forkserver imports them once, so each worker starts in ~0.1 s.
# The caller adds the module of its collate (e.g. the pretraining job's objective collate).
_FORKSERVER_PRELOAD = ["torch", "sonofm.data.dataset", "sonofm.data.augment"]


def worker_context(start: str, workers: int, preload: Sequence[str] = ()) -> Any:
    """The multiprocessing context DataLoader workers start with (None: the platform default).

    Forking workers from the training process (Linux's default) lets each worker inherit the
    trainer's whole heap copy-on-write; as the trainer rewrites activations and optimizer state,
    those pages turn into private copies in every worker, and the trainer re-creates its workers each
    epoch from an ever larger parent. ``forkserver`` starts workers from a small server process
    instead (demo's ultrasound-aware stage, 2 epochs: peak 2.6 GB forked vs 2.4 GB). Like ``spawn`` (the
    macOS default) it needs picklable datasets/collates and a ``__main__`` guard in user scripts,
    so it is opt-in (``train.worker_start=forkserver``); ``sonofm demo`` uses it. ``preload``
    names further modules the forkserver imports once (the collate's, say).
    """
    if workers <= 0 or start == "default":
        return None
    methods = multiprocessing.get_all_start_methods()
    if start not in methods:
        raise ValueError(f"worker start method {start!r} is not available here; expected one of {methods}")
    ctx = multiprocessing.get_context(start)
    if start == "forkserver":
        extra = [m for m in preload if m not in _FORKSERVER_PRELOAD]
        ctx.set_forkserver_preload([*_FORKSERVER_PRELOAD, *extra])
    return ctx


def loader_workers(requested: int | str, device: torch.device | str) -> int:
    """How many DataLoader worker processes to start for ``requested`` (an int, or "auto").

    "auto" on a CPU device: workers only where the training processes leave cores idle. The
    step's intra-op threads already use every core, and a worker that wakes up to load a batch
    stalls one of them at each parallel region's barrier, so the step waits for the worker anyway:
    measured on 2 cores (tiny preset, fp32), one worker made the median step 10% slower and the
    first step of each epoch 0.9 s slower (its fork's copy-on-write faults), against 16 ms of
    loading per 64-image batch in the training process itself; the demo's two workers cost 27% per
    step (benchmarks/pretrain.py --part job). On a GPU the step does not use the CPU, so loading
    overlaps it: one core per process is left to the trainer, up to 8 workers each.
    """
    if requested != "auto":
        return int(requested)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    procs = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))  # torchrun's processes on this node
    if torch.device(device).type == "cpu":
        spare = cpus - torch.get_num_threads() * procs
        return max(0, min(4, spare // procs))
    return max(1, min(8, cpus // procs - 1))


def _seed_worker(worker_id: int) -> None:
    # numpy/python RNGs are not used for augmentation (that is keyed on (seed, epoch, index)),
    # but third-party code in workers may use them: keep them reproducible too.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def data_path(data: str | Path | None, flag: str = "--data") -> Path:
    """The path behind ``--data``, or a clear error when there is none or it does not exist."""
    if data is None:
        raise UserError(f"no data: pass {flag} DIR (a dataset directory, manifest file or shard directory)")
    path = Path(data)
    if not path.exists():
        raise UserError(f"{flag} {path}: no such dataset directory, manifest or shard directory")
    return path


def shard_cache_dir(shard_dir: str | Path) -> Path:
    """Where `open_table` unpacks a shard directory (keyed on its path and index)."""
    shard_dir = Path(shard_dir).resolve()
    digest = hashlib.sha256(str(shard_dir).encode() + (shard_dir / "shards.json").read_bytes()).hexdigest()
    base = Path(os.environ.get("SONOFM_CACHE_DIR", Path.home() / ".cache" / "sonofm"))
    return base / "unpacked-shards" / digest[:16]


def open_table(data: str | Path) -> pd.DataFrame:
    """The whole manifest of ``--data`` (``df.attrs["root"]`` is where its images are).

    A shard directory is unpacked once into `shard_cache_dir` (eval and fine-tuning resample
    patients and need random access, which a stream cannot give).
    """
    if is_shard_dir(data):
        dest = shard_cache_dir(data)
        if not (dest / "manifest.jsonl").is_file():
            unpack_shards(data, dest)
        return read_manifest(dest)
    return read_manifest(data)


def manifest_rows(data: str | Path) -> pd.DataFrame:
    """Every manifest row of ``--data`` without touching images (a shard directory: its rows files).

    For whole-dataset label vocabularies (e.g. supervised head classes), where unpacking would be waste.
    """
    if is_shard_dir(data):
        splits = read_index(data)["splits"]
        return pd.concat([ShardDataset(data, split).table for split in splits], ignore_index=True)
    return read_manifest(data)


def build_dataset(
    data: str | Path | pd.DataFrame,
    split: str | None,
    *,
    image_size: int | None,
    augment: bool | float = False,
    text: str | TextFn = "report",
    seed: int = 0,
    root: str | Path | None = None,
    with_masks: bool = True,
    shuffle: bool | None = None,
    image_cache_mb: float = 0,
    workers: int = 0,
) -> UltrasoundDataset | ShardDataset:
    """One split of ``--data``: a map-style dataset, or a stream for a shard directory.

    ``shuffle`` only matters for streams (map-style order is the sampler's); it defaults to
    shuffling the train split. ``image_cache_mb``: keep decoded images across epochs
    (map-style datasets without masks; a stream reads each sample once per pass anyway), in shared
    memory when ``workers`` loader processes will fill it.
    """
    aug = training_augment(augment)
    if not isinstance(data, pd.DataFrame) and is_shard_dir(data):
        return ShardDataset(
            data,
            split or "train",
            image_size=image_size,
            augment=aug,
            text=text,
            with_masks=with_masks,
            shuffle=split == "train" if shuffle is None else shuffle,
            seed=seed,
        )
    return UltrasoundDataset(
        data,
        split,
        image_size=image_size,
        augment=aug,
        text=text,
        seed=seed,
        root=root,
        with_masks=with_masks,
        image_cache_mb=image_cache_mb,
        image_cache_shared=workers > 0,
    )


def build_loader(
    data: str | Path | pd.DataFrame | UltrasoundDataset | ShardDataset,
    split: str | None = "train",
    batch_size: int = 32,
    *,
    image_size: int | None = None,
    tokenizer: Callable[[list[str]], dict[str, torch.Tensor]] | None = None,
    augment: bool | float = False,
    workers: int = 0,
    shuffle: bool | None = None,
    drop_last: bool = False,
    distributed: bool = False,
    seed: int = 0,
    text: str | TextFn = "report",
    sampler: Sampler[int] | None = None,
    root: str | Path | None = None,
    worker_start: str = "default",
    with_masks: bool = True,
    image_cache_mb: float = 0,
) -> DataLoader[Any]:
    """A DataLoader of collated batches (see `sonofm.data.dataset.collate`).

    shuffle defaults to True for the train split. With `distributed=True` a DistributedSampler
    splits the data across ranks (call `loader.sampler.set_epoch(e)` each epoch). A shard
    directory streams (`ShardDataset`: it orders and splits itself; the trainer configures it).
    """
    if shuffle is None:
        shuffle = split == "train"
    ds = (
        data
        if isinstance(data, UltrasoundDataset | ShardDataset)
        else build_dataset(
            data,
            split,
            image_size=image_size,
            augment=augment,
            text=text,
            seed=seed,
            root=root,
            shuffle=shuffle,
            with_masks=with_masks,
            image_cache_mb=image_cache_mb,
            workers=workers,
        )
    )
    if isinstance(ds, IterableDataset):
        shuffle, sampler, distributed = False, None, False
    if sampler is None and distributed:
        sampler = DistributedSampler(ds, shuffle=shuffle, seed=seed, drop_last=drop_last)
    gen = torch.Generator()
    gen.manual_seed(seed)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=workers,
        collate_fn=partial(collate, tokenizer=tokenizer),
        drop_last=drop_last,
        worker_init_fn=_seed_worker if workers > 0 else None,
        generator=gen,
        persistent_workers=workers > 0,
        multiprocessing_context=worker_context(worker_start, workers),
        pin_memory=torch.cuda.is_available(),
    )
