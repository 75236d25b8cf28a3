"""Fine-tuning task `ef`: left-ventricular ejection fraction from the ED/ES pair of one echo view.

Pairing: rows are grouped by (study_id, view); a group becomes one sample when it has exactly
one ``frame == "ED"`` row and one ``frame == "ES"`` row and both agree on the target
measurement. Groups missing a frame, with duplicate frames, or without the target are skipped
and reported (logged and kept in ``task.skipped``), never an error, unless nothing is left.

Input: the two frames stacked as a 2-channel image (ED, ES), ``input_frames = 2``. `TaskModel`
runs the tower on each frame separately (the tower keeps its 1- or 3-channel stem, so pretrained
weights apply unchanged) and concatenates the per-frame feature maps along channels; the head
(`PairEFHead`) compares them, with pooled features and a left-ventricle area branch trained on
the LV masks where the data has them (option ``seg_weight``, default 1). Both frames get the
identical augmentation (same random stream), so their geometry stays registered.

Target: ``measurements[target]`` (default ``lvef_pct``), standardised with ``target_mean`` /
``target_std``: given as options, or fixed by `prepare` from the training pairs and stored in
the options, so a saved model predicts in percent without the training data; loss: smooth L1
on the standardised value.
Metrics (scikit-learn): MAE, RMSE, R^2 and bias per pair, plus ``mae_study``, the MAE of the
per-study mean over its views (how a reader would combine views).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sonofm.data.dataset import build_item
from sonofm.data.transforms import read_gray, read_label_map
from sonofm.errors import DataError
from sonofm.figures import scatter_figure
from sonofm.models.heads.regression import PairEFHead
from sonofm.tasks.base import FinetuneTask, PairDataset, register_finetune_task

log = logging.getLogger(__name__)

FRAME_ORDER = ("ED", "ES")
LV_LABEL = 3  # sonofm.taxonomy.MASK_LABELS: left-ventricle cavity


def _target_of(row: Any, target: str) -> float | None:
    m = row.get("measurements")
    if not isinstance(m, dict) or target not in m:
        return None
    v = m[target]
    return None if v is None or not np.isfinite(float(v)) else float(v)


def pair_frames(
    df: pd.DataFrame, target: str = "lvef_pct", views: list[str] | None = None
) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """ED/ES pairs of echo rows -> (one row per pair, skipped groups with reasons).

    A pair row is the ED row with ``image_es``/``id_es`` (the ES row's image and id), ``target``
    (the measurement) and ``id`` kept from the ED row. Groups are (study_id, view).
    """
    need = {"study_id", "view", "frame", "image", "measurements"}
    missing = need - set(df.columns)
    if missing:
        raise DataError(f"ef: manifest lacks column(s) {sorted(missing)}")
    echo = df[df["view"].map(lambda v: isinstance(v, str) and bool(v)) & df["frame"].isin(FRAME_ORDER)]
    if views is not None:
        echo = echo[echo["view"].isin(views)]
    pairs: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for (study, view), grp in echo.groupby(["study_id", "view"], sort=True):
        frames = grp["frame"].tolist()
        where = {"study_id": str(study), "view": str(view)}
        if sorted(frames) != sorted(FRAME_ORDER):
            have = ",".join(sorted(frames))
            reason = f"needs exactly one ED and one ES row, has [{have}]"
            skipped.append({**where, "reason": reason})
            continue
        ed = grp[grp["frame"] == "ED"].iloc[0]
        es = grp[grp["frame"] == "ES"].iloc[0]
        t_ed, t_es = _target_of(ed, target), _target_of(es, target)
        if t_ed is None and t_es is None:
            skipped.append({**where, "reason": f"no measurements[{target!r}]"})
            continue
        if t_ed is not None and t_es is not None and abs(t_ed - t_es) > 1e-6:
            skipped.append({**where, "reason": f"ED and ES disagree on {target} ({t_ed} vs {t_es})"})
            continue
        rec = ed.to_dict()
        rec.update(
            image_es=es["image"],
            id_es=str(es["id"]),
            mask_es=es.get("mask"),
            target=t_ed if t_ed is not None else t_es,
        )
        pairs.append(rec)
    out = pd.DataFrame(pairs, columns=[*df.columns, "image_es", "id_es", "mask_es", "target"])
    return out.reset_index(drop=True), skipped


class EFPairDataset(PairDataset):
    """ED/ES pairs as (2, S, S) images; identical augmentation for both frames of a pair.

    Items also carry ``lv_mask`` (2, S, S) float, the left-ventricle cavity (label `LV_LABEL`)
    of both frames, and ``has_mask`` (False where the data has no masks: zeros, not used).
    """

    def __init__(
        self,
        table: pd.DataFrame,
        root: Path,
        image_size: int,
        augment: bool | float,
        target_mean: float,
        target_std: float,
        seed: int = 0,
    ) -> None:
        super().__init__(table, root, image_size, augment, seed)
        self.mean, self.std = target_mean, target_std

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        row = self.rows[index]
        frames, masks = [], []
        for col, mcol in (("image", "mask"), ("image_es", "mask_es")):
            mrel = row.get(mcol)
            try:
                arr = read_gray(self.root / row[col])
                mask = read_label_map(self.root / mrel) if isinstance(mrel, str) and mrel else None
            except (OSError, ValueError, SyntaxError) as err:
                log.warning("skipping pair %s: cannot decode %s (%s)", row["id"], row[col], err)
                return None
            # the same (seed, epoch, index) stream for both frames: identical augmentation draws
            rng = np.random.default_rng([self.seed, self.epoch, index])
            item = build_item(row, arr, mask, "", self.image_size, self.augment, rng)
            frames.append(item["image"][0])
            masks.append(None if item["mask"] is None else (item["mask"] == LV_LABEL).float())
        has_mask = all(m is not None for m in masks)
        lv = torch.stack(masks) if has_mask else torch.zeros(2, *frames[0].shape)
        ef = float(row["target"])
        return {
            "image": torch.stack(frames),  # (2, S, S): ED, ES
            "lv_mask": lv,
            "has_mask": bool(has_mask),
            "target": (ef - self.mean) / self.std,
            "ef": ef,
            "id": str(row["id"]),
            "patient_id": str(row["patient_id"]),
            "index": int(index),
        }


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """MAE, RMSE, R^2 (scikit-learn) and mean signed error (bias)."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score  # lazy: sklearn is slow

    y, pred = np.asarray(y, float), np.asarray(pred, float)
    if len(y) == 0:
        raise DataError("ef metrics: no samples")
    out = {
        "mae": float(mean_absolute_error(y, pred)),
        "rmse": float(np.sqrt(mean_squared_error(y, pred))),
        "bias": float(np.mean(pred - y)),
        "n": float(len(y)),
    }
    out["r2"] = float(r2_score(y, pred)) if len(y) > 1 and np.ptp(y) > 0 else float("nan")
    return out


@register_finetune_task
class EFTask(FinetuneTask):
    """EF regression from ED/ES pairs.

    Options: views, target, target_mean, target_std, dim, dropout, seg_weight (LV area branch).
    """

    name: ClassVar[str] = "ef"
    primary_metric: ClassVar[str] = "mae"
    input_frames: ClassVar[int] = 2

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        views = options.get("views")
        self.views: list[str] | None = [views] if isinstance(views, str) else views
        self.target = str(options.get("target", "lvef_pct"))
        self.target_mean = float(options.get("target_mean", 55.0))
        self.target_std = float(options.get("target_std", 12.0))
        self.dim = int(options.get("dim", 96))
        self.dropout = float(options.get("dropout", 0.1))
        self.seg_weight = float(options.get("seg_weight", 1.0))
        self.skipped: list[dict[str, str]] = []

    def select(self, df: pd.DataFrame) -> pd.DataFrame:
        pairs, self.skipped = pair_frames(df, self.target, self.views)
        if self.skipped:
            shown = "; ".join(f"{s['study_id']}/{s['view']}: {s['reason']}" for s in self.skipped[:5])
            more = f" (and {len(self.skipped) - 5} more)" if len(self.skipped) > 5 else ""
            log.warning("ef: skipped %d study/view groups: %s%s", len(self.skipped), shown, more)
        if pairs.empty:
            raise DataError(
                f"ef: no complete ED/ES pairs with measurements[{self.target!r}] "
                f"(views={self.views}; {len(self.skipped)} incomplete groups)"
            )
        return pairs

    def prepare(self, train_df: pd.DataFrame) -> None:
        """Standardise the target with the training pairs' mean/std (kept in options for reloading)."""
        if "target_mean" in self.options and "target_std" in self.options:
            return
        y = (
            train_df["target"].astype(float)
            if "target" in train_df.columns
            else self.select(train_df)["target"]
        )
        self.target_mean = round(float(y.mean()), 4)
        self.target_std = round(max(float(y.std(ddof=0)), 1.0), 4) if len(y) > 1 else self.target_std
        self.options.update(target_mean=self.target_mean, target_std=self.target_std)

    def dataset(self, df: pd.DataFrame, root: Path, split: str, image_size: int, augment: bool):
        if "image_es" not in df.columns:
            df = self.select(df)
        return EFPairDataset(df, Path(root), image_size, augment, self.target_mean, self.target_std)

    def build_head(
        self, feature_channels: list[int], feature_strides: list[int], image_size: int
    ) -> nn.Module:
        # TaskModel passes the channels of the frame-concatenated maps (input_frames x tower's)
        return PairEFHead(
            list(feature_channels),
            list(feature_strides),
            frames=self.input_frames,
            dim=self.dim,
            dropout=self.dropout,
        )

    def loss(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> dict[str, Tensor]:
        terms = {"smooth_l1": F.smooth_l1_loss(outputs["ef"].float(), batch["target"].float(), beta=0.5)}
        has = batch.get("has_mask")
        if self.seg_weight > 0 and has is not None and bool(has.any()):
            logits = outputs["lv_logits"].float()[has]
            # the LV mask at the logits' resolution: fraction of cavity pixels per cell (area-exact)
            target = F.adaptive_avg_pool2d(batch["lv_mask"].float()[has], logits.shape[-2:])
            terms["lv_bce"] = self.seg_weight * F.binary_cross_entropy_with_logits(logits, target)
        return terms

    def predict(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> dict[str, np.ndarray]:
        pred = outputs["ef"].detach().float().cpu().numpy() * self.target_std + self.target_mean
        return {"pred": pred.astype(np.float64), "true": batch["ef"].cpu().numpy().astype(np.float64)}

    def metrics(self, preds: dict[str, np.ndarray], rows: pd.DataFrame) -> dict[str, float]:
        out = regression_metrics(preds["true"], preds["pred"])
        if len(rows) == len(preds["pred"]) and "study_id" in rows.columns:
            per = (
                pd.DataFrame({"study": rows["study_id"].to_numpy(), "y": preds["true"], "p": preds["pred"]})
                .groupby("study")[["y", "p"]]
                .mean()
            )
            out["mae_study"] = float(np.abs(per["y"] - per["p"]).mean())
            out["n_studies"] = float(len(per))
            for v, grp in pd.DataFrame(
                {"view": rows["view"].to_numpy(), "e": np.abs(preds["true"] - preds["pred"])}
            ).groupby("view"):
                out[f"mae/{v}"] = float(grp["e"].mean())
        return out

    def per_sample(self, preds: dict[str, np.ndarray], rows: pd.DataFrame) -> dict[str, np.ndarray]:
        return {"mae": np.abs(preds["true"] - preds["pred"])}

    def metric_fns(self, preds: dict[str, np.ndarray], rows: pd.DataFrame) -> dict[str, Any]:
        """MAE, RMSE, R^2 and bias over (true, pred) pairs, resampled jointly by the eval bootstrap."""

        def metric(name: str) -> Any:
            return lambda y, p: regression_metrics(y, p)[name]

        arrays = (np.asarray(preds["true"], float), np.asarray(preds["pred"], float))
        return {
            "mae": (metric("mae"), arrays, False),
            "rmse": (metric("rmse"), arrays, False),
            "r2": (metric("r2"), arrays, True),
        }

    def figures(self, preds: dict[str, np.ndarray], rows: pd.DataFrame, root: Path) -> list[tuple[str, str]]:
        m = regression_metrics(preds["true"], preds["pred"])
        title = f"{self.target}: MAE {m['mae']:.1f}, R^2 {m['r2']:.2f}"
        return [(scatter_figure(preds["true"], preds["pred"], title), f"{self.target}: predicted vs true")]
