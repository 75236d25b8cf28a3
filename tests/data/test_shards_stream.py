"""Shard streaming: every sample once per rank-split epoch, seeded order, exact mid-epoch starts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from sonofm.data.dataset import UltrasoundDataset, collate
from sonofm.data.loader import build_dataset, build_loader, manifest_rows, open_table
from sonofm.data.manifest import write_manifest
from sonofm.data.shards import ShardDataset, export_shards, is_shard_dir
from sonofm.train.sampler import plan_epoch


def make_dataset(root: Path, n: int = 30, size: int = 32) -> Path:
    """n train + 6 val images with masks and distinct reports."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n + 6):
        Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(root / f"images/{i}.png")
        mask = np.zeros((size, size), np.uint8)
        mask[4 : 8 + i % 9, 5:20] = 1
        Image.fromarray(mask).save(root / f"masks/{i}.png")
        rows.append(
            {
                "id": f"s{i:03d}",
                "patient_id": f"p{i}",
                "split": "train" if i < n else "val",
                "image": f"images/{i}.png",
                "mask": f"masks/{i}.png",
                "region": "thyroid",
                "report": f"Findings: a nodule of {i} mm.",
            }
        )
    write_manifest(rows, root / "manifest.parquet")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = make_dataset(tmp_path_factory.mktemp("folder") / "d")
    shards = tmp_path_factory.mktemp("shards") / "s"
    export_shards(root, shards, shard_size=7)
    return root, shards


def ids(items) -> list[str]:
    return [it["id"] for it in items]


def test_index_records_counts_and_rows(data) -> None:
    root, shards = data
    ds = ShardDataset(shards, "train")
    assert is_shard_dir(shards) and not is_shard_dir(root)
    assert ds.counts == [7, 7, 7, 7, 2] and len(ds) == 30
    assert list(ds.table["id"]) == list(UltrasoundDataset(root, "train").table["id"])


def test_unshuffled_stream_is_the_folder_order(data) -> None:
    root, shards = data
    folder = UltrasoundDataset(root, "train", image_size=16)
    streamed = list(ShardDataset(shards, "train", image_size=16))
    assert ids(streamed) == [folder[i]["id"] for i in range(len(folder))]
    for i, it in enumerate(streamed):
        assert torch.equal(it["image"], folder[i]["image"]) and torch.equal(it["mask"], folder[i]["mask"])


def test_shuffle_is_seeded_and_changes_with_the_epoch(data) -> None:
    _, shards = data

    def order(seed: int, epoch: int) -> list[str]:
        ds = ShardDataset(shards, "train", shuffle=True, shuffle_buffer=5, seed=seed, with_masks=False)
        ds.set_epoch(epoch)
        return ids(ds)

    a = order(1, 0)
    assert a == order(1, 0) and sorted(a) == sorted(order(1, 1))
    assert a != order(1, 1) and a != order(2, 0) and a != sorted(a)


@pytest.mark.parametrize("world,workers", [(1, 2), (2, 0), (2, 2), (3, 1)])
def test_ranks_and_workers_cover_every_sample_in_equal_batches(data, world: int, workers: int) -> None:
    _, shards = data
    plan = plan_epoch(30, 4, world)  # 30 samples -> padded to whole global batches
    per_rank = []
    for rank in range(world):
        ds = ShardDataset(shards, "train", shuffle=True, shuffle_buffer=5, seed=3, with_masks=False)
        ds.configure(plan, rank=rank)
        ds.set_epoch(2)
        loader = DataLoader(ds, batch_size=4, num_workers=workers, collate_fn=collate, drop_last=True)
        per_rank.append([b["id"] for b in loader])
    assert {len(batches) for batches in per_rank} == {plan.steps}
    seen = [i for batches in per_rank for b in batches for i in b]
    assert len(seen) == plan.used and set(seen) == {f"s{i:03d}" for i in range(30)}
    # the order does not depend on the worker count (workers take every n-th batch)
    if workers:
        ds = ShardDataset(shards, "train", shuffle=True, shuffle_buffer=5, seed=3, with_masks=False)
        ds.configure(plan, rank=world - 1)
        ds.set_epoch(2)
        single = DataLoader(ds, batch_size=4, collate_fn=collate, drop_last=True)
        assert [b["id"] for b in single] == per_rank[-1]


def test_set_start_begins_at_that_batch(data) -> None:
    _, shards = data
    plan = plan_epoch(30, 4, 1)
    ds = ShardDataset(shards, "train", shuffle=True, shuffle_buffer=5, seed=0, with_masks=False)
    ds.configure(plan, rank=0)
    whole = ids(ds)
    ds.set_start(3)
    decoded = []
    original = ds._decode

    def counting(f, shard, j):
        decoded.append((shard, j))
        return original(f, shard, j)

    ds._decode = counting  # type: ignore[method-assign]
    assert ids(ds) == whole[12:]
    assert len(decoded) == len(whole) - 12  # the skipped batches are not read at all


def test_loader_and_table_accept_a_shard_directory(data, tmp_path, monkeypatch) -> None:
    root, shards = data
    monkeypatch.setenv("SONOFM_CACHE_DIR", str(tmp_path / "cache"))
    ds = build_dataset(shards, "train", image_size=16)
    assert isinstance(ds, ShardDataset) and ds.shuffle  # the train split streams shuffled
    val = build_loader(shards, "val", batch_size=4, image_size=16)
    assert sorted(i for b in val for i in b["id"]) == [f"s{i:03d}" for i in range(30, 36)]
    rows = manifest_rows(shards)  # metadata only, no unpacking
    assert sorted(rows["id"]) == sorted(open_table(root)["id"])
    df = open_table(shards)  # unpacked once for jobs that need random access
    ref = open_table(root)
    assert list(df["id"]) == list(ref["id"]) and list(df["report"]) == list(ref["report"])
    img = Image.open(Path(df.attrs["root"]) / df["image"].iloc[0])
    assert np.array_equal(np.asarray(img), np.asarray(Image.open(root / ref["image"].iloc[0])))


def test_a_second_unpack_keeps_the_first(data, tmp_path) -> None:
    from sonofm.data.shards import unpack_shards

    _, shards = data
    first = unpack_shards(shards, tmp_path / "u")
    stamp = (first / "manifest.jsonl").stat().st_mtime_ns
    assert unpack_shards(shards, tmp_path / "u") == first  # as when two ranks race
    assert (first / "manifest.jsonl").stat().st_mtime_ns == stamp
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".unpack-")]
