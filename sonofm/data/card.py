"""``dataset.json``: the card of a dataset directory (how it was made, what is in it).

The card is derived from the manifest plus a ``created_by`` block from the producer, and holds no
clock times or host names, so re-making a dataset with the same seed gives the same bytes (run
timings go to the producer's JSONL log instead).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from sonofm import __version__
from sonofm.atomic import atomic_write_text
from sonofm.data.manifest import CARD_FILE, SPLITS
from sonofm.errors import DataError
from sonofm.taxonomy import MASK_LABELS

CARD_NAME = CARD_FILE
CARD_FORMAT = "sonofm-dataset"
CARD_VERSION = 1
COUNT_COLUMNS = ("split", "region", "organ", "diagnosis", "view", "frame", "source", "malignant")


def _key(v: Any) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _counts(values: Any) -> dict[str, int]:
    c = Counter(_key(v) for v in values)
    return {k: c[k] for k in sorted(c)}


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_card(
    manifest: pd.DataFrame,
    *,
    created_by: dict[str, Any],
    name: str | None = None,
    description: str | None = None,
    manifest_file: str | Path | None = None,
) -> dict[str, Any]:
    """The card of a validated manifest (as returned by `read_manifest`).

    `created_by` says how the data was made, e.g. ``{"tool": "sonofm simulate", "command": ...,
    "seed": 0, "parameters": {...}}``; the sonofm version is added. With `manifest_file` the card
    records its SHA-256 so a consumer can tell the card and manifest belong together.
    """
    df = manifest
    counts = {col: _counts(df[col]) for col in COUNT_COLUMNS if col in df.columns}
    by_split: dict[str, Any] = {}
    for split in SPLITS:
        part = df[df["split"] == split]
        by_split[split] = {
            "images": len(part),
            "patients": int(part["patient_id"].nunique()),
            "studies": int(part["study_id"].nunique()),
            **{col: _counts(part[col]) for col in ("region", "diagnosis")},
        }
    attr_counts: dict[str, dict[str, int]] = {}
    for attrs in df["attributes"]:
        for dim, tags in (attrs or {}).items():
            bucket = attr_counts.setdefault(dim, {})
            for t in tags:
                bucket[t] = bucket.get(t, 0) + 1
    attr_counts = {d: dict(sorted(attr_counts[d].items())) for d in sorted(attr_counts)}
    card: dict[str, Any] = {
        "format": CARD_FORMAT,
        "format_version": CARD_VERSION,
        "name": name,
        "description": description,
        "created_by": {"sonofm_version": __version__, **created_by},
        "num_images": len(df),
        "num_patients": int(df["patient_id"].nunique()),
        "num_studies": int(df["study_id"].nunique()),
        "num_masks": int(df["mask"].notna().sum()),
        "splits": by_split,
        "counts": counts,
        "attribute_counts": attr_counts,
        "mask_labels": {str(k): v for k, v in sorted(MASK_LABELS.items())},
    }
    if manifest_file is not None:
        card["manifest"] = {"file": Path(manifest_file).name, "sha256": file_sha256(manifest_file)}
    return card


def write_card(card: dict[str, Any], path: str | Path) -> Path:
    """Write the card atomically (a directory means ``<dir>/dataset.json``)."""
    path = Path(path)
    if path.is_dir():
        path = path / CARD_NAME
    text = json.dumps(card, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    return atomic_write_text(path, text)


def read_card(path: str | Path) -> dict[str, Any]:
    """Read ``dataset.json`` (a directory means the card inside it)."""
    path = Path(path)
    if path.is_dir():
        path = path / CARD_NAME
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: dataset card not found") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: invalid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(card, dict):
        raise DataError(f"{path}: a dataset card must be a JSON object")
    return card
