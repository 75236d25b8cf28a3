"""Torch datasets, loaders, augmentations and shards over a small hand-made dataset directory."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sonofm.data.augment import Sample, affine_matrix, apply_affine, default_ultrasound_augment
from sonofm.data.dataset import UltrasoundDataset, collate
from sonofm.data.loader import build_loader
from sonofm.data.manifest import write_manifest
from sonofm.data.shards import ShardDataset, export_shards
from sonofm.errors import DataError, UserError


def _make_dataset(root, n: int = 12, size: int = 48, corrupt: int | None = None):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = []
    rng = np.random.default_rng(0)
    for i in range(n):
        img = rng.integers(0, 255, (size, size), dtype=np.uint8)
        mask = np.zeros((size, size), np.uint8)
        mask[10 + i % 5 : 20 + i % 5, 12:30] = 1
        Image.fromarray(img).save(root / f"images/{i}.png")
        Image.fromarray(mask).save(root / f"masks/{i}.png")
        rows.append(
            {
                "id": f"s{i}",
                "patient_id": f"p{i // 2}",
                "study_id": f"st{i // 2}",
                "split": "train" if i < n - 4 else "test",
                "image": f"images/{i}.png",
                "mask": f"masks/{i}.png",
                "region": "thyroid",
                "organ": "thyroid",
                "report": f"Findings: report {i}.",
                "attributes": {"diagnosis": ["nodule"]},
                "diagnosis": "nodule",
                "measurements": {"lesion_width_mm": 5.0 + i},
                "landmarks": {"center": [21.0, 15.0 + i % 5]},
                "bbox": [[12.0, 10.0 + i % 5, 29.0, 19.0 + i % 5]],
                "pixel_spacing_mm": 0.2,
                "source": "test",
            }
        )
    if corrupt is not None:
        (root / f"images/{corrupt}.png").write_bytes(b"not a png")
    write_manifest(rows, root / "manifest.parquet")
    return root


def test_dataset_item_and_resize(tmp_path) -> None:
    root = _make_dataset(tmp_path / "d")
    ds = UltrasoundDataset(root, "train", image_size=96)
    item = ds[0]
    assert item["image"].shape == (1, 96, 96) and item["image"].dtype == torch.float32
    assert float(item["image"].min()) >= 0.0 and float(item["image"].max()) <= 1.0
    assert item["mask"].shape == (96, 96) and set(item["mask"].unique().tolist()) <= {0, 1}
    # Landmark scaled with the image (pixel-centre convention): (21 + .5) * 2 - .5 = 42.5
    assert item["landmarks"]["center"][0] == pytest.approx(42.5)
    assert item["pixel_spacing_mm"] == pytest.approx(0.1)
    assert item["text"] == "Findings: report 0."
    assert len(UltrasoundDataset(root, "test")) == 4


def test_unknown_split_and_missing_text_are_clear(tmp_path) -> None:
    root = _make_dataset(tmp_path / "d")
    with pytest.raises(DataError, match="split='validation'"):
        UltrasoundDataset(root, "validation")


def test_corrupt_image_is_skipped_and_counted(tmp_path) -> None:
    root = _make_dataset(tmp_path / "d", corrupt=1)
    loader = build_loader(root, "train", batch_size=4, shuffle=False)
    batches = list(loader)
    assert sum(b["n_skipped"] for b in batches) == 1
    assert sum(len(b["id"]) for b in batches) == 7


def test_affine_keeps_image_mask_points_aligned() -> None:
    img = np.zeros((64, 64), np.float32)
    mask = np.zeros((64, 64), np.uint8)
    img[30:34, 40:44] = 1.0
    mask[30:34, 40:44] = 1
    pts = np.array([[41.5, 31.5]])  # centre of the bright square, (x, y)
    out = apply_affine(Sample(img, mask, pts), affine_matrix((64, 64), 25.0, 1.1, (3.0, -2.0)))
    ys, xs = np.nonzero(out.mask)
    assert abs(xs.mean() - out.points[0, 0]) < 0.75 and abs(ys.mean() - out.points[0, 1]) < 0.75
    wy, wx = np.nonzero(out.image > 0.5)
    assert abs(wx.mean() - xs.mean()) < 0.75 and abs(wy.mean() - ys.mean()) < 0.75


def test_augmentation_is_a_function_of_seed_epoch_index(tmp_path) -> None:
    root = _make_dataset(tmp_path / "d")
    ds = UltrasoundDataset(root, "train", augment=default_ultrasound_augment(1.0), seed=3)
    a, b = ds[2]["image"], ds[2]["image"]
    assert torch.equal(a, b)
    ds.set_epoch(1)
    assert not torch.equal(a, ds[2]["image"])
    plain = UltrasoundDataset(root, "train")[2]["image"]
    assert not torch.equal(a, plain)


def test_loader_tokenizer_and_determinism(tmp_path) -> None:
    root = _make_dataset(tmp_path / "d")

    def tok(texts):
        ids = torch.tensor([[len(t)] for t in texts])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    l1 = build_loader(root, "train", batch_size=3, tokenizer=tok, seed=5, augment=True)
    l2 = build_loader(root, "train", batch_size=3, tokenizer=tok, seed=5, augment=True)
    for b1, b2 in zip(l1, l2, strict=True):
        assert b1["id"] == b2["id"]
        assert torch.equal(b1["image"], b2["image"])
        assert b1["input_ids"].shape == (len(b1["id"]), 1)


def test_collate_mixed_masks() -> None:
    a = {"image": torch.zeros(1, 4, 4), "mask": torch.ones(4, 4, dtype=torch.long), "text": "a", "id": "a"}
    b = {"image": torch.zeros(1, 4, 4), "mask": None, "text": "b", "id": "b"}
    out = collate([a, None, b])
    assert out["n_skipped"] == 1
    assert out["has_mask"].tolist() == [True, False]
    assert out["mask"][1].sum() == 0


def test_shards_round_trip(tmp_path) -> None:
    root = _make_dataset(tmp_path / "d")
    index = export_shards(root, tmp_path / "shards", shard_size=3)
    assert index["splits"]["train"]["samples"] == 8
    assert len(index["splits"]["train"]["shards"]) == 3
    folder = {it["id"]: it for it in UltrasoundDataset(root, "train")}
    streamed = list(ShardDataset(tmp_path / "shards", "train"))
    assert sorted(it["id"] for it in streamed) == sorted(folder)
    for it in streamed:
        ref = folder[it["id"]]
        assert torch.equal(it["image"], ref["image"]) and torch.equal(it["mask"], ref["mask"])
        assert it["text"] == ref["text"] and it["measurements"] == ref["measurements"]
    with pytest.raises(UserError, match="not empty"):
        export_shards(root, tmp_path / "shards")


def test_loader_without_masks_gives_the_same_augmented_images(tmp_path) -> None:
    # pretraining skips mask decoding; the images (and their augmentation) must not change
    _make_dataset(tmp_path)
    kw = {"image_size": 32, "augment": 1.0, "seed": 5, "shuffle": False}
    with_masks = next(iter(build_loader(tmp_path, "train", 8, **kw)))
    without = next(iter(build_loader(tmp_path, "train", 8, with_masks=False, **kw)))
    assert with_masks["mask"].any() and "has_mask" not in with_masks
    assert without["mask"] is None and not without["has_mask"].any()  # nothing decoded or carried
    torch.testing.assert_close(without["image"], with_masks["image"], atol=0, rtol=0)
