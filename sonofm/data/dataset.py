"""Torch datasets over a sonofm dataset directory (or a hand-written manifest).

One item is a dict: the image as a float tensor in [0, 1] (1, S, S), the label map, landmarks,
the text to train on, and the manifest's labels. Nothing here knows whether the data was
simulated or ingested. Images that fail to decode yield `None`; `collate` drops them and counts
them so a training job can report how many it skipped instead of crashing midway.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import torch

from sonofm.data.augment import RandomApply, Sample
from sonofm.data.image_cache import DecodedImageCache
from sonofm.data.manifest import read_manifest
from sonofm.data.transforms import image_tensor, read_gray, read_label_map, resize_image, resize_mask, to_unit
from sonofm.errors import DataError
from sonofm.reports.captions import caption_for_row

log = logging.getLogger(__name__)

TextFn = Callable[[dict[str, Any], np.random.Generator], str]
META_KEYS = (
    "id",
    "patient_id",
    "study_id",
    "split",
    "region",
    "organ",
    "view",
    "frame",
    "diagnosis",
    "malignant",
    "attributes",
    "measurements",
    "pixel_spacing_mm",
    "source",
)


def manifest_root(data: str | Path) -> Path:
    """Directory that relative image/mask paths in the manifest are relative to."""
    p = Path(data)
    return p if p.is_dir() else p.parent


def load_table(data: str | Path | pd.DataFrame, split: str | None) -> pd.DataFrame:
    """Read (and validate) a manifest, keeping one split (None keeps all)."""
    if isinstance(data, pd.DataFrame):
        df = data
    else:
        df = read_manifest(data)
    if split is not None:
        if split not in set(df["split"]):
            have = sorted(set(df["split"]))
            raise DataError(f"{data}: no rows with split={split!r} (splits present: {have})")
        df = df[df["split"] == split]
    return df.reset_index(drop=True)


def read_grayscale(path: Path | BinaryIO) -> np.ndarray:
    """8-bit grayscale array of a PNG/JPEG (colour -> luminance); see :mod:`sonofm.data.transforms`."""
    return read_gray(path)


def read_mask(path: Path | BinaryIO) -> np.ndarray:
    return read_label_map(path)


class UltrasoundDataset(torch.utils.data.Dataset):
    """Map-style dataset over one split of a dataset directory.

    text: "report" (the manifest's report), "caption" (the contrastive caption of the row's
    structured study or parsed report, :mod:`sonofm.reports.captions`), another manifest column,
    or a function (row, rng) -> str, e.g. a caption sampler. Augmentation randomness is a pure
    function of (seed, epoch, index): call `set_epoch` each epoch so runs (and resumed runs) are
    reproducible.
    """

    def __init__(
        self,
        data: str | Path | pd.DataFrame,
        split: str | None = "train",
        *,
        image_size: int | None = None,
        augment: RandomApply | None = None,
        text: str | TextFn = "report",
        with_masks: bool = True,
        root: str | Path | None = None,
        seed: int = 0,
        image_cache_mb: float = 0,
        image_cache_shared: bool = True,
    ) -> None:
        self.table = load_table(data, split)
        if root is not None:
            self.root = Path(root)
        elif isinstance(data, pd.DataFrame):
            raise DataError("a DataFrame manifest needs root= (the directory image paths are relative to)")
        else:
            self.root = manifest_root(data)
        self.rows: list[dict[str, Any]] = self.table.to_dict("records")
        self.image_size = image_size
        self.augment = augment
        self.text = text
        self.with_masks = with_masks
        self.seed = seed
        self.epoch = 0
        if text == "report" and "report" not in self.table.columns:
            raise DataError(f"{data}: manifest has no 'report' column, so there is no text to train on")
        # decoded, resized images kept across epochs, in shared memory when loader workers fill it
        # (masks are not cached, so a dataset that yields masks decodes every time)
        budget = 0 if with_masks else image_cache_mb
        self.image_cache = DecodedImageCache.create(
            len(self.rows), image_size, budget, shared=image_cache_shared
        )

    def __len__(self) -> int:
        return len(self.rows)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def fixed_texts(self) -> list[str] | None:
        """Every text the rows can get, when that is a known list (a column, the caption, or a
        sampler with ``variants(row)``), so a frozen text tower can encode them before training."""
        if callable(self.text):
            variants = getattr(self.text, "variants", None)  # a sampler that can list its texts
            return None if variants is None else [t for row in self.rows for t in variants(row)]
        rng = np.random.default_rng(0)  # unused by column/caption texts
        return [self._text(row, rng) for row in self.rows]

    def _text(self, row: dict[str, Any], rng: np.random.Generator) -> str:
        if callable(self.text):
            return self.text(row, rng)
        if self.text == "caption":
            return caption_for_row(row)
        value = row.get(self.text)
        return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        row = self.rows[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        cache = self.image_cache  # None unless every item is image-only at one size
        cached = cache.get(index) if cache is not None else None
        if cached is not None:
            (image, source_hw), mask = cached, None
        else:
            try:
                image = read_grayscale(self.root / row["image"])
                mask_path = row.get("mask") if self.with_masks else None
                mask = read_mask(self.root / mask_path) if isinstance(mask_path, str) and mask_path else None
            except (OSError, ValueError, SyntaxError) as err:
                log.warning("skipping %s: cannot decode image (%s)", row.get("id"), err)
                return None
            source_hw = image.shape[:2]
            if cache is not None:
                image = resize_image(image, cache.size)
                cache.put(index, image, source_hw)
        text = self._text(row, rng)
        return build_item(row, image, mask, text, self.image_size, self.augment, rng, source_hw=source_hw)


def _landmark_array(landmarks: Any) -> tuple[list[str], np.ndarray | None]:
    if not isinstance(landmarks, dict) or not landmarks:
        return [], None
    names = sorted(landmarks)
    pts = np.array([[float(landmarks[n][0]), float(landmarks[n][1])] for n in names], dtype=np.float64)
    return names, pts


def build_item(
    row: dict[str, Any],
    image: np.ndarray,
    mask: np.ndarray | None,
    text: str,
    image_size: int | None,
    augment: RandomApply | None,
    rng: np.random.Generator,
    *,
    source_hw: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Turn decoded arrays + a manifest row into the training dict (shared by folder and shards).

    ``source_hw``: the size the image was decoded at when it comes already resized (from the
    decoded-image cache), so landmarks and pixel spacing scale as if it were resized here.
    """
    h, w = source_hw or image.shape[:2]
    names, pts = _landmark_array(row.get("landmarks"))
    spacing = row.get("pixel_spacing_mm")
    if image_size is not None and (h, w) != (image_size, image_size):
        sx, sy = image_size / w, image_size / h
        image = resize_image(image, image_size)
        if mask is not None:
            mask = resize_mask(mask, image_size)
        if pts is not None:
            pts = (pts + 0.5) * np.array([sx, sy]) - 0.5
        if spacing is not None and not (isinstance(spacing, float) and np.isnan(spacing)):
            spacing = float(spacing) / sx
    sample = Sample(to_unit(image), mask, pts)
    if augment is not None:
        sample = augment(sample, rng)
    item: dict[str, Any] = {k: row.get(k) for k in META_KEYS}
    item["pixel_spacing_mm"] = spacing
    item["image"] = image_tensor(sample.image)
    if sample.mask is not None:
        item["mask"] = torch.from_numpy(np.ascontiguousarray(sample.mask).astype(np.int64))
    else:
        item["mask"] = None
    item["landmarks"] = (
        {} if sample.points is None else {n: tuple(p) for n, p in zip(names, sample.points, strict=True)}
    )
    item["text"] = text
    return item


def collate(batch: list[dict[str, Any] | None], tokenizer: Callable[[list[str]], dict] | None = None) -> dict:
    """Stack images/masks, tokenise texts, keep the rest as lists; drop and count failed items."""
    items = [b for b in batch if b is not None]
    out: dict[str, Any] = {"n_skipped": len(batch) - len(items)}
    if not items:
        return out
    out["image"] = torch.stack([b["image"] for b in items])
    if all(b["mask"] is not None for b in items):
        out["mask"] = torch.stack([b["mask"] for b in items])
    elif all(b["mask"] is None for b in items):
        # no mask to carry: a zero label map per image would be 8 MB a batch at 128 px, built in
        # the worker and copied to the trainer for nothing
        out["mask"] = None
        out["has_mask"] = torch.zeros(len(items), dtype=torch.bool)
    else:
        size = items[0]["image"].shape[-2:]
        out["mask"] = torch.stack(
            [b["mask"] if b["mask"] is not None else torch.zeros(size, dtype=torch.long) for b in items]
        )
        out["has_mask"] = torch.tensor([b["mask"] is not None for b in items])
    for key in items[0]:
        if key not in ("image", "mask"):
            out[key] = [b[key] for b in items]
    if tokenizer is not None:
        out.update(tokenizer(out["text"]))
    return out
