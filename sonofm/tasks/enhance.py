"""Fine-tuning task `enhance`: despeckling, trained on physically clean targets of the same scene.

Targets: the manifest column ``clean`` (default; option ``target_column``) holds images of the
same tissue and scanner settings compounded over K independent speckle realisations, written
by ``simulate_dataset(..., clean_looks=K)`` (see `sonofm.sim.compound` for why that is the
image a despeckler should recover). Input and target get the identical augmentation (same
random stream), so they stay a registered pair.

Head: `ResidualEnhancementHead` (pyramid decoder + full-resolution image stem, output = input
+ residual; `TaskModel` passes the image because the head sets ``wants_image``). Loss: L1, plus
``ssim_weight`` x MONAI's `SSIMLoss` (default 0.1).

Metrics (MONAI `PSNRMetric` / `SSIMMetric`, data range 1, on the model-size images): ``psnr``
and ``ssim`` of the model, and the same for two baselines on the same pairs, so the numbers
mean something: ``*_identity`` (the noisy input itself) and classical filters, ``*_median``
(3x3 median, scipy) and ``*_lee`` (Lee's local-statistics filter, 5x5 window).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor, nn

from sonofm.data.dataset import build_item
from sonofm.data.transforms import read_gray
from sonofm.errors import DataError
from sonofm.figures import png_data_uri
from sonofm.models.heads.enhancement import ResidualEnhancementHead
from sonofm.tasks.base import FinetuneTask, PairDataset, register_finetune_task

log = logging.getLogger(__name__)

MAX_FIGURES = 4


def psnr_ssim(pred: np.ndarray | Tensor, target: np.ndarray | Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-image PSNR (dB) and SSIM of (N, [1,] H, W) images in [0, 1] (MONAI metrics, data range 1)."""
    from monai.metrics import PSNRMetric, SSIMMetric  # lazy: monai takes ~5 s to import; only scoring uses it

    p = torch.as_tensor(np.asarray(pred), dtype=torch.float32)
    t = torch.as_tensor(np.asarray(target), dtype=torch.float32)
    if p.ndim == 3:
        p, t = p[:, None], t[:, None]
    psnr = PSNRMetric(max_val=1.0, reduction="none")(p, t).reshape(-1).numpy().astype(np.float64)
    ssim = SSIMMetric(spatial_dims=2, data_range=1.0, reduction="none")(p, t).reshape(-1).numpy()
    return psnr, ssim.astype(np.float64)


def median_baseline(images: np.ndarray, size: int = 3) -> np.ndarray:
    """Classical baseline: per-image median filter (scipy), (N, H, W)."""
    return np.stack([ndimage.median_filter(im, size=size, mode="reflect") for im in images])


def lee_filter(image: np.ndarray, window: int = 5) -> np.ndarray:
    """Lee (1980) local-statistics speckle filter of one image.

    out = m + k (x - m) with m, v the local mean and variance and k = max(0, (v - n) / v), n the
    noise variance estimated as the median local variance over non-empty pixels (the typical
    speckle level of homogeneous tissue). Written here: neither scipy nor MONAI ships it.
    """
    x = image.astype(np.float64)
    m = ndimage.uniform_filter(x, window, mode="reflect")
    v = np.maximum(ndimage.uniform_filter(x * x, window, mode="reflect") - m * m, 0.0)
    inside = x > 0
    n = float(np.median(v[inside])) if inside.any() else 0.0
    k = np.clip((v - n) / np.maximum(v, 1e-12), 0.0, 1.0)
    return (m + k * (x - m)).astype(np.float32)


class EnhancePairDataset(PairDataset):
    """(noisy image, clean target) pairs at the model size; identical augmentation for both."""

    def __init__(
        self,
        table: pd.DataFrame,
        root: Path,
        image_size: int,
        augment: bool | float,
        column: str,
        seed: int = 0,
    ) -> None:
        super().__init__(table, root, image_size, augment, seed)
        self.column = column

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        row = self.rows[index]
        out = []
        for col in ("image", self.column):
            try:
                arr = read_gray(self.root / row[col])
            except (OSError, ValueError, SyntaxError) as err:
                log.warning("skipping %s: cannot decode %s (%s)", row["id"], row[col], err)
                return None
            rng = np.random.default_rng([self.seed, self.epoch, index])  # same draws for both
            out.append(build_item(row, arr, None, "", self.image_size, self.augment, rng)["image"])
        return {
            "image": out[0],
            "clean": out[1],
            "id": str(row["id"]),
            "patient_id": str(row["patient_id"]),
            "index": int(index),
        }


@register_finetune_task
class EnhanceTask(FinetuneTask):
    """Despeckling with a residual decoder. Options: target_column, regions, ssim_weight, dim."""

    name: ClassVar[str] = "enhance"
    primary_metric: ClassVar[str] = "psnr"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.column = str(options.get("target_column", "clean"))
        self.regions = self.regions_option()
        self.ssim_weight = float(options.get("ssim_weight", 0.1))
        self.dim = int(options.get("dim", 64))

    def select(self, df: pd.DataFrame) -> pd.DataFrame:
        if self.column not in df.columns:
            raise DataError(
                f"enhance: the manifest has no {self.column!r} column of clean target images; simulate "
                "with clean targets (simulate_dataset(..., clean_looks=16)) or set target_column"
            )
        keep = df[self.column].map(lambda v: isinstance(v, str) and bool(v))
        if self.regions is not None:
            keep &= df["region"].isin(self.regions)
        out = df[keep]
        if out.empty:
            raise DataError(f"enhance: no rows with a {self.column!r} target (regions={self.regions})")
        return out

    def dataset(self, df: pd.DataFrame, root: Path, split: str, image_size: int, augment: bool):
        return EnhancePairDataset(df, Path(root), image_size, augment, self.column)

    def build_head(
        self, feature_channels: list[int], feature_strides: list[int], image_size: int
    ) -> nn.Module:
        return ResidualEnhancementHead(feature_channels, feature_strides, dim=self.dim)

    def loss(self, outputs: Tensor, batch: dict[str, Any]) -> dict[str, Tensor]:
        pred, target = outputs.float(), batch["clean"].float()
        terms = {"l1": F.l1_loss(pred, target)}
        if self.ssim_weight > 0:
            from monai.losses import SSIMLoss  # lazy: monai takes ~5 s to import; only ssim_weight > 0

            terms["ssim"] = self.ssim_weight * SSIMLoss(spatial_dims=2, data_range=1.0)(pred, target)
        return terms

    def predict(self, outputs: Tensor, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        return {
            "pred": outputs.detach().float().cpu().numpy()[:, 0],
            "input": batch["image"].float().cpu().numpy()[:, 0],
            "target": batch["clean"].float().cpu().numpy()[:, 0],
        }

    def _all_scores(self, preds: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        target = preds["target"]
        candidates = {
            "": preds["pred"],
            "_identity": preds["input"],
            "_median": median_baseline(preds["input"]),
            "_lee": np.stack([lee_filter(im) for im in preds["input"]]),
        }
        return {k: psnr_ssim(np.clip(v, 0, 1), target) for k, v in candidates.items()}

    def metrics(self, preds: dict[str, np.ndarray], rows: pd.DataFrame) -> dict[str, float]:
        out: dict[str, float] = {}
        for suffix, (psnr, ssim) in self._all_scores(preds).items():
            out[f"psnr{suffix}"] = float(np.mean(psnr))
            out[f"ssim{suffix}"] = float(np.mean(ssim))
        out["psnr_gain_vs_identity"] = out["psnr"] - out["psnr_identity"]
        out["n"] = float(len(preds["pred"]))
        return out

    def per_sample(self, preds: dict[str, np.ndarray], rows: pd.DataFrame) -> dict[str, np.ndarray]:
        psnr, ssim = psnr_ssim(preds["pred"], preds["target"])
        return {"psnr": psnr, "ssim": ssim}

    def figures(self, preds: dict[str, np.ndarray], rows: pd.DataFrame, root: Path) -> list[tuple[str, str]]:
        psnr, _ = psnr_ssim(preds["pred"], preds["target"])
        psnr_in, _ = psnr_ssim(preds["input"], preds["target"])
        figs = []
        for i in range(min(MAX_FIGURES, len(psnr))):
            tiles = [
                preds["input"][i],
                median_baseline(preds["input"][i : i + 1])[0],
                preds["pred"][i],
                preds["target"][i],
            ]
            strip = np.concatenate([np.clip(t, 0, 1) for t in tiles], axis=1)
            figs.append(
                (
                    png_data_uri((strip * 255).round().astype(np.uint8)),
                    f"{rows.iloc[i]['id']}: input ({psnr_in[i]:.1f} dB) | median 3x3 | model "
                    f"({psnr[i]:.1f} dB) | clean target",
                )
            )
        return figs
