"""Fine-tuning task `detect`: boxes of lesions (the manifest's ``bbox`` column, stored pixels).

Rows: every row of the regions that have at least one box (option ``regions`` overrides), so
images without a lesion are negatives that can produce false positives; ``negatives=False``
keeps only rows with boxes. One class (``lesion``) by default; ``classes="region"`` makes the
region of the image the box class (e.g. breast vs thyroid lesions).

Augmentation: boxes travel through the shared image augmentation as their four corner points
(the dataset's landmark channel, which `UltrasoundDataset` warps with the same affine as the
image); the augmented box is the axis-aligned hull of the warped corners, clipped to the image.

Head: CenterNet (`sonofm.models.heads.detection`). Metrics: COCO AP with pycocotools'
`COCOeval` (AP@0.5 = ``ap50``, the primary metric; mAP@[.5:.95] = ``map``; AP@0.75; AR@100),
boxes compared in stored-image pixels. torchmetrics (whose MeanAveragePrecision wraps the
same COCO protocol) is not installed here.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from sonofm.errors import DataError, UserError
from sonofm.figures import png_figure, pyplot
from sonofm.models.heads.detection import CenterNetHead, centernet_loss, centernet_targets, decode_boxes
from sonofm.tasks.base import FinetuneTask, ManifestTaskDataset, register_finetune_task
from sonofm.tasks.landmarks import read_display, stored_size

log = logging.getLogger(__name__)

MAX_FIGURES = 6
FIGURE_MIN_SCORE = 0.3


def _boxes_of(v: Any) -> list[list[float]]:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return []
    return [[float(c) for c in b] for b in v]


def coco_ap(
    pred_boxes: list[np.ndarray],
    pred_scores: list[np.ndarray],
    true_boxes: list[np.ndarray],
    pred_labels: list[np.ndarray] | None = None,
    true_labels: list[np.ndarray] | None = None,
) -> dict[str, float]:
    """COCO box AP/AR with pycocotools over images i (boxes (n, 4) x0, y0, x1, y1 in pixels).

    Returns ``map`` (AP@[.5:.95]), ``ap50``, ``ap75`` and ``ar100``; NaN when there is no
    ground-truth box at all (AP is undefined).
    """
    from pycocotools.coco import COCO  # lazy: optional, from the [eval] extra; only box AP needs it
    from pycocotools.cocoeval import COCOeval  # lazy: optional ([eval] extra); only box AP needs it

    n = len(true_boxes)
    pl = pred_labels if pred_labels is not None else [np.zeros(len(b), int) for b in pred_boxes]
    tl = true_labels if true_labels is not None else [np.zeros(len(b), int) for b in true_boxes]
    classes = sorted({int(c) for arr in tl for c in np.asarray(arr).reshape(-1)} | {0})
    images = [{"id": i + 1, "width": 1, "height": 1} for i in range(n)]
    anns, dets = [], []
    for i in range(n):
        for b, c in zip(np.asarray(true_boxes[i]).reshape(-1, 4), np.asarray(tl[i]).reshape(-1), strict=True):
            w, h = float(b[2] - b[0]), float(b[3] - b[1])
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": int(c) + 1,
                    "iscrowd": 0,
                    "bbox": [float(b[0]), float(b[1]), w, h],
                    "area": w * h,
                }
            )
        boxes = np.asarray(pred_boxes[i]).reshape(-1, 4)
        for b, s, c in zip(
            boxes, np.asarray(pred_scores[i]).reshape(-1), np.asarray(pl[i]).reshape(-1), strict=True
        ):
            dets.append(
                {
                    "image_id": i + 1,
                    "category_id": int(c) + 1,
                    "score": float(s),
                    "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                }
            )
    if not anns:
        return {"map": float("nan"), "ap50": float("nan"), "ap75": float("nan"), "ar100": float("nan")}
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": c + 1} for c in classes]}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt.createIndex()
        if dets:
            dt = gt.loadRes(dets)
        else:
            dt = COCO()
            dt.dataset = {"images": images, "annotations": [], "categories": gt.dataset["categories"]}
            dt.createIndex()
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    s = [max(float(v), 0.0) for v in ev.stats]  # -1 = "no detections at all": AP 0
    return {"map": s[0], "ap50": s[1], "ap75": s[2], "ar100": s[8]}


@register_finetune_task
class DetectTask(FinetuneTask):
    """Lesion box detection (CenterNet). Options: regions, negatives, classes, dim, out_stride, top_k."""

    name: ClassVar[str] = "detect"
    primary_metric: ClassVar[str] = "ap50"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.regions = self.regions_option()
        self.negatives = bool(options.get("negatives", True))
        self.class_by = str(options.get("classes", "lesion"))
        if self.class_by not in ("lesion", "region"):
            raise UserError(f"detect: classes must be 'lesion' or 'region', got {self.class_by!r}")
        self.class_names: list[str] | None = options.get("class_names")
        self.dim = int(options.get("dim", 64))
        self.out_stride = int(options.get("out_stride", 4))
        self.top_k = int(options.get("top_k", 20))

    # ----- data
    def select(self, df: pd.DataFrame) -> pd.DataFrame:
        has_box = df["bbox"].map(lambda v: len(_boxes_of(v)) > 0)
        regions = self.regions or sorted(set(df.loc[has_box, "region"]))
        if not regions:
            raise DataError(
                "detect: no manifest row has a bbox (simulate lesion regions, e.g. breast,thyroid)"
            )
        keep = df["region"].isin(regions) & (has_box | self.negatives)
        out = df[keep]
        if not has_box[keep].any():
            raise DataError(f"detect: no boxes in regions {regions}")
        if self.class_names is None:
            self.class_names = ["lesion"] if self.class_by == "lesion" else sorted(set(out["region"]))
            self.options["class_names"] = list(self.class_names)
        return out

    def _class_of(self, row: dict[str, Any]) -> int:
        if self.class_by == "lesion":
            return 0
        assert self.class_names is not None
        try:
            return self.class_names.index(row["region"])
        except ValueError:
            raise DataError(
                f"detect: region {row['region']!r} is not among classes {self.class_names}"
            ) from None

    def dataset(self, df: pd.DataFrame, root: Path, split: str, image_size: int, augment: bool):
        if self.class_names is None:
            self.select(df)
        root = Path(root)
        table = df.copy()
        # corners in pixel-centre coordinates (edge e is centre coordinate e - 0.5)
        table["landmarks"] = [
            {
                f"b{j}_{k}": [x - 0.5, y - 0.5]
                for j, b in enumerate(_boxes_of(v))
                for k, (x, y) in enumerate([(b[0], b[1]), (b[2], b[1]), (b[0], b[3]), (b[2], b[3])])
            }
            for v in table["bbox"]
        ]

        def make_item(item: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
            size = item["image"].shape[-1]
            n = len(_boxes_of(row["bbox"]))
            boxes = []
            for j in range(n):
                pts = np.array([item["landmarks"][f"b{j}_{k}"] for k in range(4)], dtype=np.float64) + 0.5
                x0, y0 = np.clip(pts.min(0), 0, size)
                x1, y1 = np.clip(pts.max(0), 0, size)
                if x1 - x0 >= 1.0 and y1 - y0 >= 1.0:
                    boxes.append([x0, y0, x1, y1])
            w, _ = stored_size(root, row["image"])
            cls = self._class_of(row)
            return {
                "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                "labels": torch.full((len(boxes),), cls, dtype=torch.long),
                "scale": float(size) / float(w),
            }

        ds = ManifestTaskDataset(table, root, image_size, augment, make_item, with_masks=False)
        ds.table = df.reset_index(drop=True)  # rows as the manifest has them (real landmarks)
        return ds

    # ----- model
    def build_head(
        self, feature_channels: list[int], feature_strides: list[int], image_size: int
    ) -> nn.Module:
        n = len(self.class_names or ["lesion"])
        return CenterNetHead(feature_channels, feature_strides, n, dim=self.dim, out_stride=self.out_stride)

    @staticmethod
    def _per_image(v: Any, b: int) -> list[Tensor]:
        return [v[i] for i in range(b)]

    def loss(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> dict[str, Tensor]:
        heat = outputs["heatmap"]
        b, c, h, w = heat.shape
        stride = batch["image"].shape[-1] / w
        targets = centernet_targets(
            self._per_image(batch["boxes"], b), self._per_image(batch["labels"], b), c, (h, w), stride
        )
        return centernet_loss(outputs, targets)

    def predict(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> dict[str, Any]:
        b, _, _, w = outputs["heatmap"].shape
        stride = batch["image"].shape[-1] / w
        dets = decode_boxes({k: v.detach() for k, v in outputs.items()}, stride, top_k=self.top_k)
        scale = batch["scale"].cpu().numpy().astype(np.float64)
        true = self._per_image(batch["boxes"], b)
        labels = self._per_image(batch["labels"], b)
        return {
            "pred_boxes": [d[0].numpy().astype(np.float64) / scale[i] for i, d in enumerate(dets)],
            "scores": [d[1].numpy().astype(np.float64) for d in dets],
            "pred_labels": [d[2].numpy() for d in dets],
            "true_boxes": [
                true[i].cpu().numpy().astype(np.float64).reshape(-1, 4) / scale[i] for i in range(b)
            ],
            "true_labels": [labels[i].cpu().numpy().reshape(-1) for i in range(b)],
        }

    # ----- evaluation
    def metrics(self, preds: dict[str, Any], rows: pd.DataFrame) -> dict[str, float]:
        out = coco_ap(
            preds["pred_boxes"],
            preds["scores"],
            preds["true_boxes"],
            preds["pred_labels"],
            preds["true_labels"],
        )
        out["n_images"] = float(len(preds["true_boxes"]))
        out["n_boxes"] = float(sum(len(b) for b in preds["true_boxes"]))
        return out

    def figures(self, preds: dict[str, Any], rows: pd.DataFrame, root: Path) -> list[tuple[str, str]]:
        from matplotlib.patches import Rectangle  # lazy: matplotlib is slow to import; only figures draw

        plt = pyplot()
        with_box = [i for i, b in enumerate(preds["true_boxes"]) if len(b)]
        without = [i for i, b in enumerate(preds["true_boxes"]) if not len(b)]
        picks = (with_box[: MAX_FIGURES - 2] + without[:2])[:MAX_FIGURES]
        figs = []
        for i in picks:
            row = rows.iloc[i]
            fig, ax = plt.subplots(figsize=(3.2, 3.2))
            ax.imshow(read_display(Path(root), row["image"]), cmap="gray", vmin=0, vmax=255)
            for b in preds["true_boxes"][i]:
                ax.add_patch(
                    Rectangle(
                        (b[0] - 0.5, b[1] - 0.5), b[2] - b[0], b[3] - b[1], fill=False, ec="lime", lw=1.2
                    )
                )
            shown = 0
            for b, s in zip(preds["pred_boxes"][i], preds["scores"][i], strict=True):
                if s < FIGURE_MIN_SCORE:
                    continue
                shown += 1
                ax.add_patch(
                    Rectangle(
                        (b[0] - 0.5, b[1] - 0.5),
                        b[2] - b[0],
                        b[3] - b[1],
                        fill=False,
                        ec="red",
                        lw=1.0,
                        ls="--",
                    )
                )
                ax.text(b[0], b[1] - 1, f"{s:.2f}", color="red", fontsize=6)
            ax.set_axis_off()
            figs.append(
                (
                    png_figure(fig),
                    f"{row['id']} ({row['region']}): {len(preds['true_boxes'][i])} true box(es) "
                    f"green, {shown} prediction(s) >= {FIGURE_MIN_SCORE} red",
                )
            )
        return figs
