"""DecodedImageCache: cached items equal decoded ones in every epoch (augmentation, landmarks and
pixel spacing included), loader workers in other processes fill one shared copy that later epochs
read without touching the files, and a cache that would not fit is never made."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from sonofm.data import image_cache
from sonofm.data.dataset import UltrasoundDataset, collate
from sonofm.data.image_cache import DecodedImageCache
from sonofm.data.loader import training_augment
from tests.data.test_torch_data import _make_dataset


def _items(ds: UltrasoundDataset, epoch: int) -> list[dict]:
    ds.set_epoch(epoch)
    return [ds[i] for i in range(len(ds))]


@pytest.mark.parametrize("image_size", [32, 48])  # resized from 48 px, and decoded at its size
def test_cached_items_equal_decoded_items_in_every_epoch(tmp_path, image_size) -> None:
    root = _make_dataset(tmp_path / "d")
    kw = {"image_size": image_size, "augment": training_augment(1.0), "with_masks": False, "seed": 3}
    plain = UltrasoundDataset(root, "train", **kw)
    cached = UltrasoundDataset(root, "train", image_cache_mb=1, **kw)
    assert plain.image_cache is None and cached.image_cache is not None
    for epoch in (0, 1, 2):  # epoch 0 fills the cache, 1 and 2 read it (with new augmentations)
        for a, b in zip(_items(plain, epoch), _items(cached, epoch), strict=True):
            torch.testing.assert_close(b["image"], a["image"], atol=0, rtol=0)
            assert b["landmarks"]["center"] == pytest.approx(a["landmarks"]["center"])
            assert b["text"] == a["text"]
            assert b["pixel_spacing_mm"] == pytest.approx(a["pixel_spacing_mm"])
        assert cached.image_cache.fill_fraction() == 1.0
    if image_size == 32:  # the cached image was resized; landmarks still scale from the decoded size
        assert cached[0]["pixel_spacing_mm"] == pytest.approx(0.2 * 48 / 32)


def test_workers_fill_one_shared_copy_that_later_epochs_read_without_files(tmp_path) -> None:
    root = _make_dataset(tmp_path / "d")
    ds = UltrasoundDataset(root, "train", image_size=32, with_masks=False, image_cache_mb=1)
    first = torch.cat([b["image"] for b in DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate)])
    assert ds.image_cache.fill_fraction() == 1.0  # written by the worker processes, seen here
    shutil.rmtree(root / "images")  # a later epoch (new workers, as the trainer starts) needs no file
    again = [b for b in DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate)]
    assert sum(b["n_skipped"] for b in again) == 0
    torch.testing.assert_close(torch.cat([b["image"] for b in again]), first, atol=0, rtol=0)


def test_a_cache_that_would_not_fit_is_not_made(tmp_path, monkeypatch) -> None:
    assert DecodedImageCache.create(100, 64, 0) is None  # off
    assert DecodedImageCache.create(100, None, 1024) is None  # sizes vary: nothing to stack
    assert DecodedImageCache.create(1000, 64, 1) is None  # 4 MB over a 1 MB budget
    monkeypatch.setattr(image_cache, "_shm_free_bytes", lambda: 2**20)  # a container's small /dev/shm
    assert DecodedImageCache.create(200, 64, 1024) is None  # 0.8 MB is over half of 1 MB free
    private = DecodedImageCache.create(200, 64, 1024, shared=False)  # loaded in-process: no /dev/shm
    assert private is not None and not private.images.is_shared()
    monkeypatch.setattr(image_cache, "_shm_free_bytes", lambda: None)
    cache = DecodedImageCache.create(100, 64, 1024)
    assert cache is not None and cache.get(5) is None
    with pytest.raises(ValueError, match=r"uint8 \(64, 64\)"):
        cache.put(5, np.zeros((32, 32), np.uint8), (32, 32))
    root = _make_dataset(tmp_path / "d")
    assert UltrasoundDataset(root, "train", image_size=32, image_cache_mb=1).image_cache is None  # masks
