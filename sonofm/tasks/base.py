"""Task definitions: the registry and base class of the downstream tasks.

They sit below the jobs: `sonofm.models.task_model` builds a head from a task, the fine-tuning job
trains it and the eval kind `finetune` scores it; `sonofm.finetune.tasks` re-exports this module.

A fine-tuning *task* (segment, classify, landmarks, ef, detect, enhance) is everything that is
specific to one downstream problem: which manifest rows it uses, how an item is built, the head
on top of the image tower's feature maps, the loss, how outputs become per-sample predictions,
the metrics and the report figures. Everything else (adapters, few-shot sampling, training
loop, model saving, seeds, evaluation) is shared by `sonofm.finetune.job` and the eval kind
`finetune`, so a new task is one class here plus a head.

Contract (summarised in docs/design.md, "Fine-tuning tasks"):

- Items are dicts of tensors/scalars/strings; they must include ``image`` (C, S, S) float in
  [0, 1] (C = 1, or ``input_frames`` for multi-frame tasks such as EF on the ED/ES pair),
  ``patient_id`` (str), ``id`` (str), ``index`` (int: the row position in the dataset's table,
  so predictions can be matched back to rows) plus the task's targets. Batch them with
  :func:`collate`. Datasets expose ``.table`` (their manifest rows, in item order) and may have
  ``set_epoch`` (the trainer calls it). :class:`ManifestTaskDataset` does all of this.
- ``prepare(train_rows)`` (optional) fixes data-dependent options (class list, target scaling)
  in ``self.options`` before the head is built; the options are saved with the model.
- ``build_head(feature_channels, feature_strides, image_size)`` returns a module mapping the
  tower's ``feature_maps`` list to outputs. For ``input_frames > 1`` `TaskModel` runs the tower
  on each frame separately and concatenates the per-frame maps along channels (frame-major), so
  the head receives ``feature_channels[i] * input_frames`` channels at level i.
- ``predict(outputs, batch)`` turns one batch of outputs into per-sample numpy arrays (first axis
  = batch), including targets; the caller concatenates batches along axis 0 (keys whose values
  are lists are concatenated as lists). ``metrics(preds, rows)`` and ``figures(preds, rows,
  root)`` then see every sample of a split at once, with ``rows`` the manifest rows in the same
  order (`sonofm.tasks.predict.predict_dataset` runs a model over a dataset this way).
- ``per_sample`` / ``metric_fns`` expose metrics in per-sample form so the eval kind
  ``finetune`` can bootstrap CIs; ``primary_metric`` picks the best epoch on validation.
- A head whose class sets ``wants_image = True`` is called ``head(feature_maps, image=images)``.
"""

from __future__ import annotations

import importlib
import logging
import numbers
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from sonofm.data.augment import training_augment
from sonofm.data.loader import build_dataset
from sonofm.errors import UserError

log = logging.getLogger(__name__)

FINETUNE_TASKS: dict[str, type[FinetuneTask]] = {}
# Name fragments of metrics where lower is better (errors and distances).
LOWER_IS_BETTER = ("mae", "mre", "rmse", "mse", "err", "hd95", "hausdorff", "dist", "loss", "fp_rate")


def lower_is_better(metric: str) -> bool:
    """Whether a metric is an error or distance by its name (LOWER_IS_BETTER)."""
    lowered = metric.lower()
    return any(k in lowered for k in LOWER_IS_BETTER)


def nanmean(values: np.ndarray) -> float:
    """Mean over the defined (non-NaN) values; NaN when there are none (no numpy warning)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else float("nan")


class FinetuneTask(ABC):
    """One downstream problem: data selection, items, head, loss, predictions, metrics, figures."""

    name: ClassVar[str]
    primary_metric: ClassVar[str]  # key of `metrics()` used to pick the best epoch
    # the primary metric's direction; left out by a task, it follows the metric's name (errors and
    # distances, LOWER_IS_BETTER, are lower; accuracy, AUC, Dice, PSNR are higher)
    higher_is_better: ClassVar[bool]
    input_frames: ClassVar[int] = 1  # frames stacked along the image channel axis (EF: 2)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "primary_metric" in cls.__dict__ and "higher_is_better" not in cls.__dict__:
            cls.higher_is_better = not lower_is_better(cls.primary_metric)

    def __init__(self, **options: Any) -> None:
        """Keep the options (JSON-able) so a saved TaskModel can rebuild the same task."""
        self.options: dict[str, Any] = dict(options)

    def regions_option(self) -> list[str] | None:
        """The ``regions`` option as a list (a single region may be given as a string; None = all)."""
        regions = self.options.get("regions")
        return [regions] if isinstance(regions, str) else regions

    # -- data ------------------------------------------------------------------------------
    @abstractmethod
    def select(self, df: pd.DataFrame) -> pd.DataFrame:
        """Manifest rows this task trains/evaluates on (e.g. rows with a lesion mask)."""

    @abstractmethod
    def dataset(
        self, df: pd.DataFrame, root: Path, split: str, image_size: int, augment: bool
    ) -> torch.utils.data.Dataset:
        """Torch dataset over `df` (already selected and restricted to `split`)."""

    def strata(self, df: pd.DataFrame) -> pd.Series | None:
        """Per-row class labels that few-shot sampling keeps represented (None = no classes)."""
        return None

    def prepare(self, train_df: pd.DataFrame) -> None:
        """Fix data-dependent options (e.g. the class list) from the training rows into `options`.

        Called by the job once, before `build_head`; whatever it stores in ``self.options`` is
        saved with the model, so a loaded model rebuilds the same head without the data.
        """
        return None

    # -- model -----------------------------------------------------------------------------
    @abstractmethod
    def build_head(
        self, feature_channels: list[int], feature_strides: list[int], image_size: int
    ) -> nn.Module:
        """Head: ``head(feature_maps: list[Tensor]) -> Tensor | dict[str, Tensor]``."""

    @abstractmethod
    def loss(self, outputs: Any, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Named loss terms (summed and logged by the trainer)."""

    # -- evaluation ------------------------------------------------------------------------
    @abstractmethod
    def predict(self, outputs: Any, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        """Per-sample predictions and targets of one batch (first axis = batch)."""

    @abstractmethod
    def metrics(self, preds: dict[str, np.ndarray], rows: pd.DataFrame) -> dict[str, float]:
        """Scalar metrics over a whole split; must contain `primary_metric`."""

    def per_sample(self, preds: dict[str, np.ndarray], rows: pd.DataFrame) -> dict[str, np.ndarray]:
        """Per-sample metric values (metric name -> (N,) array, NaN = not defined for that sample).

        Their mean is the metric; the eval kind bootstraps them for CIs (see `metric_fns`).
        """
        return {}

    def metric_fns(
        self, preds: dict[str, np.ndarray], rows: pd.DataFrame
    ) -> dict[str, tuple[Callable[..., float], tuple[np.ndarray, ...], bool]]:
        """Metrics as ``name -> (fn, per-sample arrays, higher_is_better)`` with ``fn(*arrays)`` the value.

        The eval kind ``finetune`` bootstraps each (resampling rows of the arrays jointly) for
        CIs and paired comparisons. Default: the NaN-mean of every `per_sample` array; a task
        whose metrics are not means of per-sample values (AUC, F1, AP) overrides this.
        """
        out: dict[str, tuple[Callable[..., float], tuple[np.ndarray, ...], bool]] = {}
        for name, values in self.per_sample(preds, rows).items():
            out[name] = (nanmean, (np.asarray(values, dtype=np.float64),), self.metric_higher_is_better(name))
        return out

    def metric_higher_is_better(self, name: str) -> bool:
        """Direction of a metric: the task's own for its primary metric, else errors/distances are lower."""
        if name == self.primary_metric:
            return self.higher_is_better
        return not lower_is_better(name)

    def figures(self, preds: dict[str, np.ndarray], rows: pd.DataFrame, root: Path) -> list[tuple[str, str]]:
        """(png data URI, caption) pairs for the HTML report: overlays, confusion matrices."""
        return []

    def describe(self) -> dict[str, Any]:
        """JSON-able record of the task (stored in the task model's config)."""
        return {"name": self.name, "options": dict(self.options)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options})"


def register_finetune_task(cls: type[FinetuneTask]) -> type[FinetuneTask]:
    """Class decorator: make a task available to `get_task`, the CLI and the eval kind."""
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__} needs a class attribute `name`")
    FINETUNE_TASKS[cls.name] = cls
    return cls


# Built-in task modules; imported lazily so `tasks.py` itself stays light and import-cycle free.
_BUILTIN_MODULES = (
    "sonofm.tasks.segment",
    "sonofm.tasks.classify",
    "sonofm.tasks.landmarks",
    "sonofm.tasks.ef",
    "sonofm.tasks.detect",
    "sonofm.tasks.enhance",
)


def load_builtin_tasks() -> None:
    """Import the built-in task modules so they register themselves (missing ones are skipped)."""
    for mod in _BUILTIN_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as err:
            if err.name != mod:  # a real missing dependency inside the module: surface it
                raise
            log.debug("fine-tuning task module %s not available", mod)


def get_task(name: str, **options: Any) -> FinetuneTask:
    """Instantiate a registered task; a clear UserError names the valid ones."""
    if name not in FINETUNE_TASKS:
        load_builtin_tasks()
    if name not in FINETUNE_TASKS:
        valid = ", ".join(sorted(FINETUNE_TASKS)) or "(none registered)"
        raise UserError(f"unknown fine-tuning task {name!r}; valid tasks: {valid}")
    return FINETUNE_TASKS[name](**options)


# -- batching -------------------------------------------------------------------------------
def collate(batch: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Batch task items: stack same-shape tensors, tensorise plain numbers, keep the rest as lists.

    `None` items (images that failed to decode) are dropped and counted in ``n_skipped``. A key
    whose values mix tensors and None (or differ in shape) stays a list, so tasks decide how to
    treat missing targets.
    """
    items = [b for b in batch if b is not None]
    out: dict[str, Any] = {"n_skipped": len(batch) - len(items)}
    if not items:
        return out
    for key in items[0]:
        values = [b.get(key) for b in items]
        if all(isinstance(v, torch.Tensor) for v in values) and len({tuple(v.shape) for v in values}) == 1:
            out[key] = torch.stack(values)
        elif all(isinstance(v, bool | np.bool_) for v in values):
            out[key] = torch.tensor([bool(v) for v in values])
        elif all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values):
            out[key] = torch.tensor([int(v) for v in values], dtype=torch.long)
        elif all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
            out[key] = torch.tensor([float(v) for v in values], dtype=torch.float32)
        else:
            out[key] = values
    return out


def concat_predictions(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """Join per-batch `predict` outputs along the sample axis (arrays concatenated, lists joined)."""
    if not chunks:
        return {}
    out: dict[str, Any] = {}
    for key in chunks[0]:
        vals = [c[key] for c in chunks]
        if isinstance(vals[0], list):
            out[key] = [v for chunk in vals for v in chunk]
        else:
            out[key] = np.concatenate([np.asarray(v) for v in vals], axis=0)
    return out


class ManifestTaskDataset(torch.utils.data.Dataset):
    """Reusable task dataset: decode + resize + augment via `UltrasoundDataset`, then `make_item`.

    ``make_item(item, row)`` receives the generic item (image (1,S,S), mask (S,S) or None,
    landmarks in resized pixel coordinates, pixel_spacing_mm rescaled to the new size, and the
    manifest labels) and the manifest row; it returns the task's dict (or None to skip). The
    result always carries ``image``, ``id``, ``patient_id`` and ``index``. Image, mask and
    landmarks stay aligned under augmentation because `UltrasoundDataset` applies one affine.
    """

    def __init__(
        self,
        df: pd.DataFrame,
        root: Path,
        image_size: int,
        augment: bool | float,
        make_item: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any] | None],
        *,
        with_masks: bool = True,
        seed: int = 0,
    ) -> None:
        self.table = df.reset_index(drop=True)
        self.base = build_dataset(
            self.table,
            None,
            image_size=image_size,
            augment=augment,
            text="id",
            seed=seed,
            root=root,
            with_masks=with_masks,
        )
        self.make_item = make_item

    def __len__(self) -> int:
        return len(self.base)

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        item = self.base[index]
        if item is None:
            return None
        row = self.base.rows[index]
        out = self.make_item(item, row)
        if out is None:
            return None
        out.setdefault("image", item["image"])
        out["id"] = str(row["id"])
        out["patient_id"] = str(row["patient_id"])
        out["index"] = int(index)
        return out


class PairDataset(torch.utils.data.Dataset):
    """Rows of a task table that each give a pair of images (ED/ES frames, noisy/clean) at the
    model size, both under one augmentation; subclasses read a row in `__getitem__`. The epoch
    (`set_epoch`) and `seed` make each item's augmentation reproducible."""

    def __init__(
        self, table: pd.DataFrame, root: Path, image_size: int, augment: bool | float, seed: int = 0
    ) -> None:
        self.table = table.reset_index(drop=True)
        self.rows = self.table.to_dict("records")
        self.root = Path(root)
        self.image_size = image_size
        self.augment = training_augment(augment)
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.rows)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
