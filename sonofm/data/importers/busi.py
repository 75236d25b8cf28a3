"""BUSI (Al-Dhabyani et al. 2020, Breast Ultrasound Images): benign/malignant/normal folders.

Layout: ``<root>/{benign,malignant,normal}/<name>.png`` with masks ``<name>_mask.png`` and, for
some lesions, extra masks ``<name>_mask_1.png`` (merged into one lesion label map). The root may
also be the usual ``Dataset_BUSI_with_GT`` folder one level down.
"""

from __future__ import annotations

import re
from pathlib import Path

from sonofm.data.importers import _common as common
from sonofm.errors import DataError, UserError

CLASSES = {"benign": False, "malignant": True, "normal": None}
_MASK = re.compile(r"^(?P<stem>.+)_mask(_\d+)?$")


def _root(src: Path) -> Path:
    for cand in (src, src / "Dataset_BUSI_with_GT"):
        if any((cand / c).is_dir() for c in CLASSES):
            return cand
    raise UserError(f"{src}: not a BUSI folder (expected subfolders {'/'.join(CLASSES)})")


def import_busi(src: str | Path, out: str | Path) -> common.ImportResult:
    """Import BUSI into a dataset directory (lesion masks as label 1, one box per lesion)."""
    root = _root(common.require_dir(src, "BUSI"))
    out = Path(out)
    rows, skips = [], common.Skips()
    for cls, malignant in CLASSES.items():
        folder = root / cls
        if not folder.is_dir():
            continue
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
        masks: dict[str, list[Path]] = {}
        for p in files:
            m = _MASK.match(p.stem)
            if m:
                masks.setdefault(m.group("stem"), []).append(p)
        for p in files:
            if _MASK.match(p.stem):
                continue
            rid = common.safe_id(f"busi_{cls}_{p.stem}")
            try:
                img = common.load_gray(p)
                lab = common.binary_to_labels(
                    [common.load_gray(m) for m in masks.get(p.stem, [])], 1, img.shape
                )
            except DataError as err:
                skips.add(p.relative_to(root), "unreadable", str(err))
                continue
            if cls != "normal" and not masks.get(p.stem):
                skips.add(p.relative_to(root), "missing_mask", "lesion image without _mask.png")
                continue
            diagnosis = "normal" if cls == "normal" else "mass"
            report = (
                "Breast ultrasound: no focal lesion."
                if cls == "normal"
                else f"Breast ultrasound: {cls} mass."
            )
            row = common.image_row(out, rid, img, lab, split=common.split_of(rid))
            row |= common.lesion_fields("breast", "breast", diagnosis, lab)
            rows.append(row | {"malignant": malignant, "report": report, "source": "busi"})
    return common.finish_dataset(
        rows,
        out,
        skips,
        tool="sonofm ingest busi",
        name="busi",
        description="BUSI breast ultrasound (benign / malignant / normal) with lesion masks.",
    )
