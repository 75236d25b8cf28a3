"""Fine-tuning task `landmarks`: anatomical landmark localisation by heatmap regression.

Channels: one heatmap per landmark key. With ``per_view=True`` (default) a key is
``"<view>/<name>"`` (an A4C apex and an A2C apex are different targets), otherwise the name;
rows without a view use the bare name. The order is fixed: the ``names`` option, or the sorted
keys found in the selected manifest rows (then written back into ``options["names"]`` so a
saved task model rebuilds the same channels). Landmarks a row lacks, or that augmentation
moved off the image, are masked out of loss and metrics.

Targets and loss: a Gaussian (``sigma`` heatmap cells) at each landmark, normalised to a
distribution; the loss is the cross-entropy between it and the spatial softmax of the head's
logits plus an L1 term on the soft-argmax coordinates (integral regression, which is what makes
the decoded points sub-pixel accurate). Decoding: ``soft_argmax`` (default) or
``quadratic`` (argmax + Newton step on the log-heatmap), see `sonofm.models.heads.landmarks`.

Metrics: mean radial error in millimetres. Points are mapped from the model's image size back
to the stored image's pixels (inverse of the resize in `sonofm.data.dataset.build_item`) and
scaled by the manifest's ``pixel_spacing_mm`` (of the stored image), so the error does not
depend on the model's input size. Also the success detection rate within 2 and 4 mm and the
MRE in (stored-image) pixels.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sonofm.data.decode import image_size as decoded_image_size
from sonofm.data.transforms import read_gray
from sonofm.errors import DataError, UserError
from sonofm.figures import png_figure, pyplot
from sonofm.models.heads.landmarks import (
    LandmarkHead,
    gaussian_heatmaps,
    heatmap_to_image,
    image_to_heatmap,
    quadratic_refine,
    soft_argmax,
)
from sonofm.tasks.base import FinetuneTask, ManifestTaskDataset, register_finetune_task

log = logging.getLogger(__name__)

SDR_THRESHOLDS_MM = (2.0, 4.0)
MAX_FIGURES = 6


def _present(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and np.isnan(v))


def stored_size(root: Path, rel: str) -> tuple[int, int]:
    """(width, height) of a stored image, from its header only.

    Read through the one decoding home (`sonofm.data.decode`), so a hostile file (a
    decompression bomb, a non-image) is one ImageDecodeError naming the file, never a PIL traceback.
    """
    return decoded_image_size(Path(root) / rel)


def to_stored_pixels(points: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Model-input pixel coordinates -> stored-image pixels; `scale` = model size / stored size.

    Inverse of ``(p + 0.5) * scale - 0.5`` (the resize mapping of `build_item`); `scale` has one
    value per sample (square resize, so x and y share it).
    """
    s = np.asarray(scale, dtype=np.float64).reshape(-1, *([1] * (points.ndim - 1)))
    return (np.asarray(points, dtype=np.float64) + 0.5) / s - 0.5


def radial_errors_mm(
    pred_px: np.ndarray, true_px: np.ndarray, visible: np.ndarray, spacing_mm: np.ndarray
) -> np.ndarray:
    """Per-landmark radial errors (N, K) in mm (NaN where not visible), pixels of the stored image."""
    d = np.linalg.norm(np.asarray(pred_px, float) - np.asarray(true_px, float), axis=-1)
    d = d * np.asarray(spacing_mm, dtype=np.float64).reshape(-1, 1)
    return np.where(np.asarray(visible, bool), d, np.nan)


def landmark_metrics(
    pred_px: np.ndarray, true_px: np.ndarray, visible: np.ndarray, spacing_mm: np.ndarray
) -> dict[str, float]:
    """MRE (mm and px) and success detection rates over every visible landmark of a split."""
    vis = np.asarray(visible, bool)
    if not vis.any():
        raise DataError("landmark metrics: no visible landmark among the evaluated samples")
    px = np.linalg.norm(np.asarray(pred_px, float) - np.asarray(true_px, float), axis=-1)[vis]
    out = {"mre_px": float(px.mean()), "n_landmarks": float(vis.sum())}
    mm = radial_errors_mm(pred_px, true_px, vis, spacing_mm)[vis]
    if np.isfinite(mm).all():
        out["mre_mm"] = float(mm.mean())
        out["median_re_mm"] = float(np.median(mm))
        for t in SDR_THRESHOLDS_MM:
            out[f"sdr_{t:g}mm"] = float((mm <= t).mean())
    else:
        log.warning("landmarks: some rows lack pixel_spacing_mm; MRE in mm is not available")
        out["mre_mm"] = float("nan")
    return out


def landmark_key(view: Any, name: str, per_view: bool) -> str:
    return f"{view}/{name}" if per_view and isinstance(view, str) and view else str(name)


@register_finetune_task
class LandmarksTask(FinetuneTask):
    """Heatmap landmark regression.

    Options: region, views, names, per_view, sigma, coord_weight, decode, dim, out_stride.
    """

    name: ClassVar[str] = "landmarks"
    primary_metric: ClassVar[str] = "mre_mm"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.region: str | None = options.get("region")
        views = options.get("views")
        self.views: list[str] | None = [views] if isinstance(views, str) else views
        self.names: list[str] | None = list(options["names"]) if options.get("names") else None
        self.per_view = bool(options.get("per_view", True))
        self.sigma = float(options.get("sigma", 1.0))
        self.coord_weight = float(options.get("coord_weight", 1.0))
        self.decode = str(options.get("decode", "soft_argmax"))
        if self.decode not in ("soft_argmax", "quadratic"):
            raise UserError(f"landmarks: decode must be soft_argmax or quadratic, got {self.decode!r}")
        self.dim = int(options.get("dim", 64))
        self.out_stride = int(options.get("out_stride", 4))

    # ----- data
    def _keys_of(self, row: Any) -> list[str]:
        lm = row["landmarks"] if isinstance(row["landmarks"], dict) else {}
        return [landmark_key(row.get("view"), n, self.per_view) for n in lm]

    def select(self, df: pd.DataFrame) -> pd.DataFrame:
        keep = df["landmarks"].map(lambda v: isinstance(v, dict) and len(v) > 0)
        if self.region is not None:
            keep &= df["region"] == self.region
        if self.views is not None:
            keep &= df["view"].isin(self.views)
        out = df[keep]
        if out.empty:
            raise DataError(
                f"landmarks: no manifest rows with landmarks (region={self.region}, views={self.views})"
            )
        if self.names is None:
            self.names = sorted({k for _, r in out.iterrows() for k in self._keys_of(r)})
            self.options["names"] = list(self.names)
        return out

    def _require_names(self) -> list[str]:
        if not self.names:
            raise UserError(
                "landmarks: the landmark order is unknown; call select() first or pass names=[...]"
            )
        return self.names

    def dataset(self, df: pd.DataFrame, root: Path, split: str, image_size: int, augment: bool):
        names = self._require_names()
        index = {n: i for i, n in enumerate(names)}
        root = Path(root)

        def make_item(item: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
            pts = np.zeros((len(names), 2), dtype=np.float32)
            vis = np.zeros(len(names), dtype=bool)
            size = item["image"].shape[-1]
            for n, p in item["landmarks"].items():
                k = index.get(landmark_key(row.get("view"), n, self.per_view))
                if k is None or not np.all(np.isfinite(p)):
                    continue
                pts[k] = p
                vis[k] = -0.5 <= p[0] <= size - 0.5 and -0.5 <= p[1] <= size - 0.5
            w, _ = stored_size(root, row["image"])
            spacing = row.get("pixel_spacing_mm")
            return {
                "points": torch.from_numpy(pts),
                "visible": torch.from_numpy(vis),
                "scale": float(size) / float(w),
                "spacing_mm": float(spacing) if _present(spacing) else float("nan"),
            }

        return ManifestTaskDataset(df, root, image_size, augment, make_item, with_masks=False)

    # ----- model
    def build_head(
        self, feature_channels: list[int], feature_strides: list[int], image_size: int
    ) -> nn.Module:
        names = self._require_names()
        return LandmarkHead(
            feature_channels, feature_strides, len(names), dim=self.dim, out_stride=self.out_stride
        )

    @staticmethod
    def _stride(logits: Tensor, batch: dict[str, Any]) -> float:
        return batch["image"].shape[-1] / logits.shape[-1]

    def loss(self, outputs: Tensor, batch: dict[str, Any]) -> dict[str, Tensor]:
        logits = outputs.float()
        b, k, h, w = logits.shape
        stride = self._stride(logits, batch)
        cells = image_to_heatmap(batch["points"].float(), stride)  # (B, K, 2)
        vis = batch["visible"].float()
        n = vis.sum().clamp_min(1.0)
        target = gaussian_heatmaps(cells, (h, w), self.sigma).reshape(b, k, -1)
        target = target / target.sum(-1, keepdim=True).clamp_min(1e-12)
        logp = F.log_softmax(logits.reshape(b, k, -1), dim=-1)
        ce = -(target * logp).sum(-1)  # (B, K)
        coord = (soft_argmax(logits) - cells).abs().sum(-1)  # (B, K) cells
        return {
            "heatmap_ce": (ce * vis).sum() / n,
            "coord_l1": self.coord_weight * (coord * vis).sum() / n,
        }

    def decode_points(self, logits: Tensor, image_size: int) -> Tensor:
        """(B, K, h, w) logits -> (B, K, 2) points in model-input pixels."""
        stride = image_size / logits.shape[-1]
        if self.decode == "quadratic":
            cells = quadratic_refine(torch.softmax(logits.flatten(2).float(), -1).reshape(logits.shape))
        else:
            cells = soft_argmax(logits)
        return heatmap_to_image(cells, stride)

    def predict(self, outputs: Tensor, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        pred = self.decode_points(outputs.detach(), batch["image"].shape[-1]).cpu().numpy()
        scale = batch["scale"].cpu().numpy()
        return {
            "pred_px": to_stored_pixels(pred, scale),
            "true_px": to_stored_pixels(batch["points"].cpu().numpy(), scale),
            "visible": batch["visible"].cpu().numpy(),
            "spacing_mm": batch["spacing_mm"].cpu().numpy().astype(np.float64),
        }

    # ----- evaluation
    def metrics(self, preds: dict[str, np.ndarray], rows: pd.DataFrame) -> dict[str, float]:
        out = landmark_metrics(preds["pred_px"], preds["true_px"], preds["visible"], preds["spacing_mm"])
        views = rows["view"].to_numpy() if "view" in rows.columns else None
        if views is not None and len(views) == len(preds["pred_px"]):
            err = radial_errors_mm(preds["pred_px"], preds["true_px"], preds["visible"], preds["spacing_mm"])
            for v in sorted({str(x) for x in views if isinstance(x, str)}):
                sel = err[views == v]
                if np.isfinite(sel).any():
                    out[f"mre_mm/{v}"] = float(np.nanmean(sel))
        return out

    def per_sample(self, preds: dict[str, np.ndarray], rows: pd.DataFrame) -> dict[str, np.ndarray]:
        err = radial_errors_mm(preds["pred_px"], preds["true_px"], preds["visible"], preds["spacing_mm"])
        with warnings.catch_warnings():  # rows without a visible landmark give NaN, not a warning
            warnings.simplefilter("ignore", RuntimeWarning)
            return {"mre_mm": np.nanmean(err, axis=1)}

    def metric_fns(self, preds: dict[str, np.ndarray], rows: pd.DataFrame) -> dict[str, Any]:
        """Landmark-pooled MRE / SDR (as `metrics`), in a form the eval bootstrap resamples per image."""
        err = radial_errors_mm(preds["pred_px"], preds["true_px"], preds["visible"], preds["spacing_mm"])
        ok = np.isfinite(err)
        count = ok.sum(axis=1).astype(np.float64)
        total = np.where(ok, err, 0.0).sum(axis=1)

        def ratio(num: np.ndarray, den: np.ndarray) -> float:
            return float(num.sum() / den.sum()) if den.sum() > 0 else float("nan")

        out: dict[str, Any] = {"mre_mm": (ratio, (total, count), False)}
        for t in SDR_THRESHOLDS_MM:
            hits = (np.where(ok, err, np.inf) <= t).sum(axis=1).astype(np.float64)
            out[f"sdr_{t:g}mm"] = (ratio, (hits, count), True)
        return out

    def figures(self, preds: dict[str, np.ndarray], rows: pd.DataFrame, root: Path) -> list[tuple[str, str]]:
        plt = pyplot()
        err = self.per_sample(preds, rows)["mre_mm"]
        order = [i for i in np.argsort(np.nan_to_num(err, nan=-1.0)) if np.isfinite(err[i])]
        picks = sorted(set(order[:3] + order[-3:]), key=lambda i: err[i])[:MAX_FIGURES]
        figs = []
        for i in picks:
            row = rows.iloc[i]
            img = read_display(Path(root), row["image"])
            vis = np.asarray(preds["visible"][i], bool)
            fig, ax = plt.subplots(figsize=(3.2, 3.2))
            ax.imshow(img, cmap="gray", vmin=0, vmax=255)
            t, p = preds["true_px"][i][vis], preds["pred_px"][i][vis]
            ax.scatter(t[:, 0], t[:, 1], s=22, facecolors="none", edgecolors="lime", label="true")
            ax.scatter(p[:, 0], p[:, 1], s=22, marker="x", c="red", label="predicted")
            for a, b in zip(t, p, strict=True):
                ax.plot([a[0], b[0]], [a[1], b[1]], c="yellow", lw=0.6)
            ax.set_axis_off()
            ax.legend(fontsize=6, loc="lower right")
            caption = f"{row['id']} ({row.get('view') or row['region']}): MRE {err[i]:.2f} mm"
            figs.append((png_figure(fig), caption))
        return figs


def read_display(root: Path, rel: str) -> np.ndarray:
    """A stored image as uint8 grayscale for figures."""
    return read_gray(root / rel)
