"""Fine-tuning task ``segment``: per-pixel classes (lesion by default; echo chambers with labels=[...]).

Options: ``labels`` (mask label ids of `sonofm.taxonomy.MASK_LABELS` to segment, default [1] =
lesion; e.g. [3, 4, 5] for LV, myocardium, LA), ``regions`` (manifest regions to use; default:
where those labels occur: echo labels -> heart, vessel labels -> vessel, lesion/organ -> every
non-echo region), ``head`` (auto/unet/unetr: the multi-level decoder; ht: the hybrid-tuning head),
``feature_size`` (decoder width), ``dim`` (HT neck width).

Loss: MONAI ``DiceCELoss`` (softmax, one-hot targets). Metrics (MONAI): Dice and IoU over the
foreground classes, averaged per image then over images; images whose ground truth is empty
for a class do not count for that class (MONAI ``ignore_empty``). HD95 in millimetres (pixel
distance x the image's pixel spacing at the model resolution; pixels are isotropic); a
prediction that misses a present structure entirely scores the image diagonal.
Metrics are computed at the model's input resolution.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from scipy import ndimage
from torch import Tensor, nn

from sonofm.data.transforms import load_gray_resized
from sonofm.errors import UserError
from sonofm.figures import png_data_uri
from sonofm.models.heads.segmentation import build_segmentation_head
from sonofm.tasks.base import FinetuneTask, ManifestTaskDataset, register_finetune_task
from sonofm.taxonomy import MASK_LABELS

log = logging.getLogger(__name__)

_LABEL_REGIONS: dict[int, set[str] | None] = {
    3: {"heart"},
    4: {"heart"},
    5: {"heart"},
    6: {"heart"},
    7: {"heart"},
    8: {"heart"},
    9: {"vessel"},
    10: {"vessel"},
}
MAX_OVERLAYS = 8


def _has_mask(v: Any) -> bool:
    return isinstance(v, str) and bool(v)


def overlay(
    image: np.ndarray, truth: np.ndarray | None, pred: np.ndarray | None, scale: int = 2
) -> np.ndarray:
    """RGB uint8 picture: the grayscale image with truth contours (green) and prediction (red)."""
    rgb = np.repeat(image[..., None], 3, axis=2).astype(np.uint8)
    for mask, colour in ((truth, (40, 220, 60)), (pred, (235, 40, 40))):
        if mask is None:
            continue
        for lab in np.unique(mask):
            if lab == 0:
                continue
            region = mask == lab
            edge = region & ~ndimage.binary_erosion(region)
            rgb[edge] = colour
    if scale > 1:
        rgb = np.kron(rgb, np.ones((scale, scale, 1), dtype=np.uint8))
    return rgb


def load_gray(root: Path, rel: str, size: int) -> np.ndarray:
    """uint8 (size, size) of a manifest image (for overlays)."""
    return load_gray_resized(root / rel, size)


def _one_hot(masks: np.ndarray, k: int) -> Tensor:
    t = torch.from_numpy(masks.astype(np.int64))
    return torch.nn.functional.one_hot(t, k).permute(0, 3, 1, 2).float()


def segmentation_scores(
    pred: np.ndarray, truth: np.ndarray, num_classes: int, spacing: np.ndarray | None = None, chunk: int = 64
) -> dict[str, np.ndarray]:
    """Per-image, per-foreground-class Dice, IoU and HD95 (mm when `spacing` is given), via MONAI.

    pred/truth: (N, H, W) integer label maps with values in [0, num_classes). Returns arrays of
    shape (N, num_classes - 1): NaN where the truth has no pixel of that class; HD95 is the image
    diagonal where the truth has the class but the prediction does not.
    """
    from monai.metrics import (  # lazy: monai takes ~5 s to import; only scoring needs it
        DiceMetric,
        HausdorffDistanceMetric,
        MeanIoU,
    )

    n = len(pred)
    k = num_classes
    dice_m = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
    iou_m = MeanIoU(include_background=False, reduction="none", ignore_empty=True)
    hd_m = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")
    dice, iou, hd = [], [], []
    for a in range(0, n, chunk):
        p, t = _one_hot(pred[a : a + chunk], k), _one_hot(truth[a : a + chunk], k)
        dice.append(dice_m(p, t).numpy())
        iou.append(iou_m(p, t).numpy())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MONAI warns for every empty prediction/truth pair
            hd.append(hd_m(p, t).numpy())
    dice_a, iou_a, hd_a = (np.concatenate(x).astype(np.float64) for x in (dice, iou, hd))
    present_t = np.stack([(truth == c).reshape(n, -1).any(1) for c in range(1, k)], axis=1)
    present_p = np.stack([(pred == c).reshape(n, -1).any(1) for c in range(1, k)], axis=1)
    diag = float(np.hypot(*truth.shape[1:]))
    hd_a = np.where(present_t & ~present_p, diag, hd_a)
    hd_a = np.where(present_t, hd_a, np.nan)
    hd_a = np.where(np.isfinite(hd_a) | np.isnan(hd_a), hd_a, diag)
    if spacing is not None:
        hd_a = hd_a * np.asarray(spacing, dtype=np.float64)[:, None]
    for arr in (dice_a, iou_a):
        arr[~present_t] = np.nan
    return {"dice": dice_a, "iou": iou_a, "hd95": hd_a}


def _nanmean_rows(a: np.ndarray) -> np.ndarray:
    """Per-image mean over classes, NaN when every class is NaN (without numpy's warning)."""
    ok = ~np.isnan(a)
    cnt = ok.sum(1)
    tot = np.where(ok, a, 0.0).sum(1)
    return np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)


def _nanmean(a: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    a = a[~np.isnan(a)]
    return float(a.mean()) if a.size else float("nan")


@register_finetune_task
class SegmentTask(FinetuneTask):
    name: ClassVar[str] = "segment"
    primary_metric: ClassVar[str] = "dice"

    def __init__(self, **options: Any) -> None:
        labels = [int(v) for v in options.get("labels", [1])]
        unknown = [v for v in labels if v not in MASK_LABELS or v == 0]
        if not labels or unknown:
            valid = {k: v for k, v in MASK_LABELS.items() if k}
            raise UserError(f"segment: labels must be foreground mask label ids from {valid}, got {labels}")
        head = options.get("head", "auto")
        if head not in ("auto", "unet", "unetr", "ht"):
            raise UserError(f"segment: head must be one of auto, unet, unetr, ht; got {head!r}")
        extra = set(options) - {"labels", "regions", "head", "feature_size", "dim"}
        if extra:
            raise UserError(f"segment: unknown options {sorted(extra)}")
        super().__init__(**{**options, "labels": labels, "head": head})
        self.labels = labels
        self.num_classes = 1 + len(labels)
        self._loss: nn.Module | None = None

    @property
    def class_names(self) -> list[str]:
        return [MASK_LABELS[v] for v in self.labels]

    def regions(self) -> set[str] | None:
        if self.options.get("regions"):
            return {str(r) for r in self.options["regions"]}
        wanted = [_LABEL_REGIONS.get(v) for v in self.labels]
        if all(w is not None for w in wanted):
            return set().union(*wanted)  # type: ignore[arg-type]
        return None  # lesion/organ: every region except echo

    def select(self, df: pd.DataFrame) -> pd.DataFrame:
        if "mask" not in df.columns:
            raise UserError("segment: the manifest has no 'mask' column (no label maps to train on)")
        keep = df["mask"].map(_has_mask)
        regions = self.regions()
        if regions is not None:
            keep &= df["region"].isin(regions)
        else:
            keep &= df["region"] != "heart"
        out = df[keep]
        if out.empty:
            raise UserError(
                f"segment: no manifest rows with masks for labels {self.labels} "
                f"(regions: {sorted(regions) if regions else 'all but heart'})"
            )
        return out

    def dataset(
        self, df: pd.DataFrame, root: Path, split: str, image_size: int, augment: bool | float
    ) -> torch.utils.data.Dataset:
        return ManifestTaskDataset(df, root, image_size, augment, self._make_item, with_masks=True)

    def _make_item(self, item: dict[str, Any], row: dict[str, Any]) -> dict[str, Any] | None:
        mask = item.get("mask")
        if mask is None:
            return None
        target = torch.zeros_like(mask)
        for j, lab in enumerate(self.labels, start=1):
            target[mask == lab] = j
        spacing = item.get("pixel_spacing_mm")
        ok = spacing is not None and spacing == spacing
        return {"image": item["image"], "mask": target, "spacing": float(spacing) if ok else float("nan")}

    def build_head(
        self, feature_channels: list[int], feature_strides: list[int], image_size: int
    ) -> nn.Module:
        return build_segmentation_head(
            self.options["head"],
            feature_channels,
            feature_strides,
            image_size,
            self.num_classes,
            image_channels=self.input_frames,
            feature_size=int(self.options.get("feature_size", 16)),
            dim=int(self.options.get("dim", 128)),
        )

    def loss(self, outputs: Any, batch: dict[str, Any]) -> dict[str, Tensor]:
        if self._loss is None:
            from monai.losses import DiceCELoss  # lazy: monai takes ~5 s to import; only training needs it

            self._loss = DiceCELoss(to_onehot_y=True, softmax=True)
        return {"dice_ce": self._loss(outputs.float(), batch["mask"][:, None])}

    def predict(self, outputs: Any, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        return {
            "pred": outputs.argmax(1).to(torch.uint8).cpu().numpy(),
            "truth": batch["mask"].to(torch.uint8).cpu().numpy(),
            "spacing": batch["spacing"].float().cpu().numpy(),
        }

    def _scores(self, preds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # metrics(), metric_fns() and figures() see the same arrays: score them once (MONAI's HD95
        # is the slow part). The cache holds the array itself, so identity cannot be recycled.
        key = preds["pred"]
        cache = getattr(self, "_score_cache", None)
        if cache is None or cache[0] is not key:
            scores = segmentation_scores(preds["pred"], preds["truth"], self.num_classes, preds["spacing"])
            self._score_cache = (key, scores)
        return self._score_cache[1]

    def per_image(self, preds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        s = self._scores(preds)
        return {
            "dice": _nanmean_rows(s["dice"]),
            "iou": _nanmean_rows(s["iou"]),
            "hd95_mm": _nanmean_rows(s["hd95"]),
        }

    def metrics(self, preds: dict[str, np.ndarray], rows: pd.DataFrame) -> dict[str, float]:
        per = self.per_image(preds)
        out = {k: _nanmean(v) for k, v in per.items()}
        # Dice ignores images without the structure (MONAI ignore_empty): report how often the
        # model still predicts something there, so false positives cannot hide.
        empty = ~np.stack(
            [
                (preds["truth"] == c).reshape(len(preds["truth"]), -1).any(1)
                for c in range(1, self.num_classes)
            ],
            1,
        ).any(1)
        if empty.any():
            fp = (preds["pred"][empty].reshape(int(empty.sum()), -1) > 0).any(1)
            out["empty_fp_rate"] = float(fp.mean())
        if len(self.labels) > 1:
            s = self._scores(preds)
            for j, name in enumerate(self.class_names):
                out[f"dice_{name}"] = _nanmean(s["dice"][:, j])
                out[f"hd95_mm_{name}"] = _nanmean(s["hd95"][:, j])
        out["n_images"] = float(len(preds["pred"]))
        return out

    def metric_fns(
        self, preds: dict[str, np.ndarray], rows: pd.DataFrame
    ) -> dict[str, tuple[Any, tuple[np.ndarray, ...], bool]]:
        per = self.per_image(preds)
        return {
            "dice": (_nanmean, (per["dice"],), True),
            "iou": (_nanmean, (per["iou"],), True),
            "hd95_mm": (_nanmean, (per["hd95_mm"],), False),
        }

    def figures(self, preds: dict[str, np.ndarray], rows: pd.DataFrame, root: Path) -> list[tuple[str, str]]:
        per = self.per_image(preds)
        dice = per["dice"]
        scored = np.flatnonzero(~np.isnan(dice))
        order = scored[np.argsort(dice[scored])]  # images with a structure, worst first
        empty = np.flatnonzero(np.isnan(dice))  # nothing to find: show one (false positives, if any)
        n = MAX_OVERLAYS
        picks = [*order[: n // 2], *order[::-1][: n - n // 2 - (1 if len(empty) else 0)], *empty[:1]]
        out = []
        size = preds["pred"].shape[-1]
        for i in dict.fromkeys(int(i) for i in picks):
            row = rows.iloc[i]
            try:
                img = load_gray(root, row["image"], size)
            except OSError as err:
                log.warning("overlay for %s skipped: %s", row["id"], err)
                continue
            pic = overlay(img, preds["truth"][i], preds["pred"][i], scale=max(1, 256 // size))
            d = "n/a" if np.isnan(dice[i]) else f"{dice[i]:.3f}"
            out.append((png_data_uri(pic), f"{row['id']}: Dice {d} (green truth, red prediction)"))
        return out
