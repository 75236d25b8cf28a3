"""ultrabench's processed layout (the `ultrabench` package writes it for ten public datasets).

Layout: ``<root>/images/``, ``masks/scan/``, ``masks/<task>/`` and ``{train,validation,test}.json``,
each a JSON array of samples such as ``{"image": "images/x.png", "scan_mask": "masks/scan/x.png",
"mass_mask": "masks/mass/x.png", "pathology": "benign", "label": 1}``. The folder is named
``<dataset>_v<version>``; the dataset name gives the region and organ. Task masks become
``MASK_LABELS`` ids (mass/lesion -> 1, lv -> 3, myocardium -> 4, la -> 5, other organs -> 2).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from sonofm.data.importers._common import (
    ImportResult,
    Skips,
    finish_dataset,
    image_row,
    lesion_fields,
    load_gray,
    require_dir,
    safe_id,
)
from sonofm.errors import DataError, UserError

SPLIT_FILES = {"train": "train.json", "val": "validation.json", "test": "test.json"}
# dataset name -> (region, organ) in sonofm.taxonomy terms
DATASETS = {
    "aul": ("liver", "liver"),
    "fatty_liver": ("liver", "liver"),
    "gbcu": ("liver", "gallbladder"),
    "camus": ("heart", "heart"),
    "mmotu": ("gynaecology", "ovary"),
    "open_kidney": ("kidney", "kidney"),
    "psfhs": ("obstetric", "fetus"),
    "stanford_thyroid": ("thyroid", "thyroid"),
    "butterfly": (None, None),
    "pocus": (None, None),
}
MASK_IDS = {"mass": 1, "lesion": 1, "tumor": 1, "nodule": 1, "lv": 3, "myocardium": 4, "la": 5}


def _dataset_name(root: Path) -> str:
    return re.sub(r"_v[\w.]+$", "", root.name.lower())


def _label_of(key: str) -> int:
    task = key[: -len("_mask")].lower()
    return MASK_IDS.get(task, 2)


def import_ultrabench(src: str | Path, out: str | Path) -> ImportResult:
    """Import one ultrabench dataset folder (keeps its train/validation/test split)."""
    root = require_dir(src, "ultrabench dataset")
    if not any((root / f).is_file() for f in SPLIT_FILES.values()):
        raise UserError(f"{root}: not an ultrabench dataset (expected {', '.join(SPLIT_FILES.values())})")
    out = Path(out)
    name = _dataset_name(root)
    region, organ = DATASETS.get(name, (None, None))
    rows, skips = [], Skips()
    for split, fname in SPLIT_FILES.items():
        path = root / fname
        if not path.is_file():
            continue
        try:
            samples: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: invalid JSON ({err.msg} at line {err.lineno})") from None
        if not isinstance(samples, list):
            raise DataError(f"{path}: expected a JSON array of samples")
        for i, s in enumerate(samples):
            if not isinstance(s, dict) or "image" not in s:
                skips.add(f"{fname}[{i}]", "bad_record", "sample without an 'image' field")
                continue
            rid = safe_id(f"{name}_{split}_{Path(s['image']).stem}")
            try:
                img = load_gray(root / s["image"])
                lab = np.zeros(img.shape, np.uint8)
                tasks = sorted(k for k in s if k.endswith("_mask") and k != "scan_mask" and s[k])
                for k in tasks:
                    m = load_gray(root / s[k])
                    if m.shape != img.shape:
                        raise DataError(f"{s[k]}: mask shape {m.shape} != image shape {img.shape}")
                    lab[m > (127 if m.max() > 1 else 0)] = _label_of(k)
            except DataError as err:
                skips.add(f"{fname}[{i}]", "unreadable", str(err))
                continue
            pathology = str(s.get("pathology", "") or "").lower()
            malignant = {"malignant": True, "benign": False}.get(pathology)
            diagnosis = (
                "mass"
                if pathology in ("benign", "malignant")
                else ("normal" if pathology == "normal" else None)
            )
            pid = str(s.get("patient_id") or s.get("patient") or rid)
            row = image_row(out, rid, img, lab if tasks else None, split=split, patient_id=pid)
            row |= lesion_fields(region, organ, diagnosis, lab)
            imaging = {
                "label": s.get("label"),
                "pathology": pathology or None,
                "scan_mask": s.get("scan_mask"),
            }
            rows.append(row | {"malignant": malignant, "source": f"ultrabench:{name}", "imaging": imaging})
    return finish_dataset(
        rows,
        out,
        skips,
        tool="sonofm ingest ultrabench",
        name=name,
        description=f"ultrabench {name} (splits as published).",
    )
