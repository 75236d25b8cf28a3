"""Fine-tuning task ``classify``: one label per image (diagnosis, echo view, region, malignancy, ...).

Options: ``target`` (a manifest column, or ``malignant`` (benign/malignant) / ``body_system``;
default ``diagnosis``), ``classes`` (fixed class list; default: the classes of the training rows,
stored with the model), ``head`` (auto/ht: the hybrid-tuning head; pool: GAP of the deepest map +
linear), ``dim``, ``dropout``, ``label_smoothing``, ``class_weight`` (``none``, default, or
``balanced``: cross-entropy weights ``n / (k * n_c)`` from the training rows' class counts, as
scikit-learn's ``compute_class_weight("balanced")``; stored with the model as ``class_weights``).
Balanced weights matter when classes are rare: simulated echo exams hold A4C/A2C/PLAX/PSAX-PM in
every patient but A3C, SC4C and the mitral/apical short-axis levels in few, and with plain
cross-entropy a ViT trained from scratch lumps those into their frequent neighbours (A3C -> A2C,
PSAX_MV/PSAX_AP -> PSAX_PM) for many epochs.

Metrics (scikit-learn): accuracy, balanced accuracy, macro precision/recall/F1 and macro
one-vs-rest ROC AUC over the classes that have both positives and negatives in the split.
Rows whose label is not among the model's classes are kept out of the loss (ignore index) and
counted as errors in the metrics.
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

from sonofm.errors import UserError
from sonofm.figures import confusion_figure
from sonofm.models.heads.classification import build_classification_head
from sonofm.tasks.base import FinetuneTask, ManifestTaskDataset, register_finetune_task
from sonofm.tasks.labels import label_values

log = logging.getLogger(__name__)
IGNORE = -100


def accuracy(y: np.ndarray, probs: np.ndarray) -> float:
    from sklearn.metrics import accuracy_score  # lazy: sklearn is slow to import; only scoring uses it

    return float(accuracy_score(y, probs.argmax(1))) if len(y) else float("nan")


def balanced_accuracy(y: np.ndarray, probs: np.ndarray) -> float:
    """Mean recall over the true classes present (unknown labels, -1, count as misses)."""
    if not len(y):
        return float("nan")
    pred = probs.argmax(1)
    recalls = [float((pred[y == c] == c).mean()) for c in np.unique(y) if c >= 0]
    return float(np.mean(recalls)) if recalls else float("nan")


def macro_prf(y: np.ndarray, probs: np.ndarray) -> tuple[float, float, float]:
    from sklearn.metrics import precision_recall_fscore_support  # lazy: sklearn is slow; only scoring uses it

    labels = sorted({int(c) for c in np.unique(y) if c >= 0})
    if not labels:
        return float("nan"), float("nan"), float("nan")
    p, r, f, _ = precision_recall_fscore_support(
        y, probs.argmax(1), labels=labels, average="macro", zero_division=0
    )
    return float(p), float(r), float(f)


def macro_auc(y: np.ndarray, probs: np.ndarray) -> float:
    """Macro one-vs-rest ROC AUC over classes with both positives and negatives present."""
    from sklearn.metrics import roc_auc_score  # lazy: sklearn is slow to import; only scoring uses it

    aucs = []
    for c in range(probs.shape[1]):
        pos = y == c
        if pos.any() and (~pos).any():
            aucs.append(roc_auc_score(pos, probs[:, c]))
    return float(np.mean(aucs)) if aucs else float("nan")


def balanced_class_weights(labels: np.ndarray | list[Any], classes: list[str]) -> list[float]:
    """Per-class loss weights ``n / (k * n_c)`` over the labelled rows (scikit-learn's "balanced").

    A class of the list that has no training rows gets weight 1.0 (it cannot contribute a loss term).
    """
    from sklearn.utils.class_weight import compute_class_weight  # lazy: sklearn is slow to import

    y = np.asarray([str(v) for v in labels if v is not None and str(v) in classes])
    present = [c for c in classes if c in set(y.tolist())]
    if not present:
        raise UserError("classify: class_weight=balanced needs labelled training rows")
    w = compute_class_weight("balanced", classes=np.asarray(present), y=y)
    lookup = dict(zip(present, w.tolist(), strict=True))
    return [float(lookup.get(c, 1.0)) for c in classes]


def _f1(y: np.ndarray, probs: np.ndarray) -> float:
    return macro_prf(y, probs)[2]


@register_finetune_task
class ClassifyTask(FinetuneTask):
    name: ClassVar[str] = "classify"
    primary_metric: ClassVar[str] = "acc"

    def __init__(self, **options: Any) -> None:
        known = {"target", "classes", "head", "dim", "dropout", "label_smoothing"}
        extra = set(options) - known - {"class_weight", "class_weights"}
        if extra:
            raise UserError(f"classify: unknown options {sorted(extra)}")
        weighting = options.get("class_weight", "none")
        if weighting not in ("none", "balanced"):
            raise UserError(f"classify: class_weight must be none or balanced; got {weighting!r}")
        head = options.get("head", "auto")
        if head not in ("auto", "ht", "pool"):
            raise UserError(f"classify: head must be one of auto, ht, pool; got {head!r}")
        target = str(options.get("target", "diagnosis"))
        super().__init__(**{**options, "target": target, "head": head})
        self.target = target

    @property
    def classes(self) -> list[str]:
        classes = self.options.get("classes")
        if not classes:
            raise UserError("classify: the class list is not known yet (call prepare(train rows) first)")
        return [str(c) for c in classes]

    def labels(self, df: pd.DataFrame) -> np.ndarray:
        return label_values(df, self.target)

    def select(self, df: pd.DataFrame) -> pd.DataFrame:
        labels = self.labels(df)
        out = df[[v is not None for v in labels]]
        if out.empty:
            raise UserError(f"classify: no manifest rows have a {self.target!r} label")
        return out

    def strata(self, df: pd.DataFrame) -> pd.Series | None:
        return pd.Series(self.labels(df), index=df.index)

    def prepare(self, train_df: pd.DataFrame) -> None:
        if not self.options.get("classes"):
            classes = sorted({str(v) for v in self.labels(train_df) if v is not None})
            if len(classes) < 2:
                raise UserError(
                    f"classify: the training rows have {len(classes)} {self.target!r} class(es) {classes}; "
                    "need at least 2"
                )
            self.options["classes"] = classes
        if self.options.get("class_weight", "none") == "balanced" and not self.options.get("class_weights"):
            self.options["class_weights"] = balanced_class_weights(self.labels(train_df), self.classes)

    def dataset(
        self, df: pd.DataFrame, root: Path, split: str, image_size: int, augment: bool | float
    ) -> torch.utils.data.Dataset:
        index = {c: i for i, c in enumerate(self.classes)}
        labels = self.labels(df)
        df = df.assign(_label=[index.get(str(v), IGNORE) if v is not None else IGNORE for v in labels])
        return ManifestTaskDataset(df, root, image_size, augment, _ClassItem(), with_masks=False)

    def build_head(
        self, feature_channels: list[int], feature_strides: list[int], image_size: int
    ) -> nn.Module:
        return build_classification_head(
            self.options["head"],
            feature_channels,
            feature_strides,
            len(self.classes),
            dim=int(self.options.get("dim", 128)),
            dropout=float(self.options.get("dropout", 0.1)),
        )

    def loss(self, outputs: Any, batch: dict[str, Any]) -> dict[str, Tensor]:
        smoothing = float(self.options.get("label_smoothing", 0.0))
        weights = self.options.get("class_weights")
        weight = None if not weights else torch.tensor(weights, dtype=torch.float32, device=outputs.device)
        ce = F.cross_entropy(
            outputs.float(), batch["label"], weight=weight, ignore_index=IGNORE, label_smoothing=smoothing
        )
        return {"ce": ce}

    def predict(self, outputs: Any, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        label = batch["label"].cpu().numpy()
        return {
            "probs": torch.softmax(outputs.float(), dim=1).cpu().numpy(),
            "label": np.where(label == IGNORE, -1, label),
        }

    def metrics(self, preds: dict[str, np.ndarray], rows: pd.DataFrame) -> dict[str, float]:
        y, probs = preds["label"], preds["probs"]
        p, r, f = macro_prf(y, probs)
        return {
            "acc": accuracy(y, probs),
            "balanced_acc": balanced_accuracy(y, probs),
            "precision": p,
            "recall": r,
            "f1": f,
            "auc": macro_auc(y, probs),
            "n_images": float(len(y)),
        }

    def metric_fns(
        self, preds: dict[str, np.ndarray], rows: pd.DataFrame
    ) -> dict[str, tuple[Any, tuple[np.ndarray, ...], bool]]:
        arrays = (preds["label"], preds["probs"])
        return {
            "acc": (accuracy, arrays, True),
            "balanced_acc": (balanced_accuracy, arrays, True),
            "f1": (_f1, arrays, True),
            "auc": (macro_auc, arrays, True),
        }

    def figures(self, preds: dict[str, np.ndarray], rows: pd.DataFrame, root: Path) -> list[tuple[str, str]]:
        y, pred = preds["label"], preds["probs"].argmax(1)
        classes = self.classes
        known = y >= 0
        conf = np.zeros((len(classes), len(classes)), dtype=np.int64)
        np.add.at(conf, (y[known], pred[known]), 1)
        title = f"{self.target} (accuracy {accuracy(y, preds['probs']):.3f})"
        return [(confusion_figure(conf, classes, title), f"confusion matrix of {self.target}")]


class _ClassItem:
    """Item builder (a class, not a closure, so DataLoader workers can pickle it)."""

    def __call__(self, item: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
        return {"image": item["image"], "label": int(row["_label"])}
