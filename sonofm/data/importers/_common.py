"""Shared plumbing of the public-dataset importers: image conversion, splits, the final write.

Every importer walks its published layout, turns each sample into a manifest row (images and
masks converted to the dataset directory's PNG conventions) and hands the rows to
`finish_dataset`, which writes the manifest, the card and ``import_report.json`` (counts of the
skipped samples per reason). A sample that cannot be read is skipped with a reason, never fatal.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from sonofm.atomic import atomic_write_json
from sonofm.data.card import build_card, write_card
from sonofm.data.manifest import read_manifest, write_manifest
from sonofm.data.pngio import write_png
from sonofm.errors import DataError, UserError
from sonofm.records import pick
from sonofm.taxonomy import system_of

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass
class ImportResult:
    out: Path
    images: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_files: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return pick(self, "images", "skipped", "skipped_files")


class Skips:
    """Collects skipped samples with a reason code."""

    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, file: str | Path, reason: str, detail: str = "") -> None:
        log.info("skipping %s: %s %s", file, reason, detail)
        self.items.append({"file": str(file), "reason": reason, "detail": detail})


def require_dir(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"{p}: {what} folder not found")
    return p


def safe_id(text: str) -> str:
    """A file-name-safe id: runs of other characters become '_'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def split_of(key: str, fractions: tuple[float, float] = (0.8, 0.1)) -> str:
    """Deterministic split from a hash of the patient key (stable across runs and machines)."""
    u = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
    if u < fractions[0]:
        return "train"
    return "val" if u < sum(fractions) else "test"


def load_gray(path: Path) -> np.ndarray:
    """Any image file as uint8 grayscale (H, W); DataError naming the file when unreadable."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L")).copy()
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"{path}: not a readable image ({err})") from None


def save_image(arr: np.ndarray, out: Path, rid: str) -> str:
    (out / "images").mkdir(parents=True, exist_ok=True)
    rel = f"images/{rid}.png"
    write_png(out / rel, np.ascontiguousarray(arr))
    return rel


def save_mask(label_map: np.ndarray, out: Path, rid: str) -> str:
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rel = f"masks/{rid}.png"
    write_png(out / rel, np.ascontiguousarray(label_map.astype(np.uint8)))
    return rel


def image_row(
    out: Path,
    rid: str,
    image: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    split: str,
    patient_id: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """The manifest row of one imported image: writes ``images/<rid>.png`` (and ``masks/<rid>.png``
    for a label map) and fills id, patient_id (default: the image's own id), split, image and
    mask; ``fields`` are the rest of the row (region, organ, diagnosis, report, source...)."""
    return {
        "id": rid,
        "patient_id": rid if patient_id is None else patient_id,
        "split": split,
        "image": save_image(image, out, rid),
        "mask": None if mask is None else save_mask(mask, out, rid),
        **fields,
    }


def binary_to_labels(masks: list[np.ndarray], label: int, shape: tuple[int, int]) -> np.ndarray:
    """Union of binary masks (any value > 127 after JPEG noise, or > 0 for 0/1 maps) as one label."""
    out = np.zeros(shape, np.uint8)
    for m in masks:
        if m.shape != shape:
            raise DataError(f"mask shape {m.shape} does not match image shape {shape}")
        thr = 127 if m.max() > 1 else 0
        out[m > thr] = label
    return out


def mask_bboxes(label_map: np.ndarray, label: int = 1) -> list[list[float]]:
    """One [x0, y0, x1, y1] box per connected component of `label`."""
    from scipy import ndimage  # lazy: scipy.ndimage (~0.2 s) only for lesion boxes

    lab, n = ndimage.label(label_map == label)
    boxes = []
    for sl in ndimage.find_objects(lab):
        if sl is not None:
            ys, xs = sl
            boxes.append([float(xs.start), float(ys.start), float(xs.stop), float(ys.stop)])
    return boxes


def base_attributes(organ: str | None, diagnosis: str | None) -> dict[str, list[str]]:
    """Attribute dict carrying what every importer knows: organ, body system, diagnosis."""
    attrs: dict[str, list[str]] = {}
    if organ:
        attrs["organ"] = [organ]
        attrs["body_system"] = [system_of(organ)]
    if diagnosis:
        attrs["diagnosis"] = [diagnosis]
    return attrs


def lesion_fields(
    region: str | None, organ: str | None, diagnosis: str | None, label_map: np.ndarray
) -> dict[str, Any]:
    """The row fields of a lesion data set's image: region, organ, diagnosis, their attributes and
    one box per lesion (label 1) of its label map."""
    return {
        "region": region,
        "organ": organ,
        "diagnosis": diagnosis,
        "attributes": base_attributes(organ, diagnosis),
        "bbox": mask_bboxes(label_map),
    }


def finish_dataset(
    rows: list[dict[str, Any]],
    out: Path,
    skips: Skips,
    *,
    tool: str,
    name: str,
    description: str,
    parameters: dict[str, Any] | None = None,
) -> ImportResult:
    """Write manifest, card and import report; returns counts. DataError when nothing was imported."""
    out.mkdir(parents=True, exist_ok=True)
    res = ImportResult(out=out, images=len(rows), skipped_files=skips.items)
    res.skipped = dict(sorted(Counter(s["reason"] for s in skips.items).items()))
    report = out / "import_report.json"
    atomic_write_json(report, res.to_dict(), default=None)
    if not rows:
        raise DataError(f"no sample could be imported ({res.skipped or 'nothing found'}); see {report}")
    mpath = write_manifest(rows, out)
    card = build_card(
        read_manifest(mpath),
        created_by={"tool": tool, "parameters": parameters or {}},
        name=name,
        description=description,
        manifest_file=mpath,
    )
    write_card(card, out)
    return res
