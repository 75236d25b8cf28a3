"""TN3K and DDTI thyroid nodule segmentation sets.

TN3K layout: ``<root>/{trainval,test}-image/<n>.jpg`` with ``{trainval,test}-mask/<n>.jpg``
(test rows go to the test split; trainval is split per image into train/val).
DDTI (as redistributed with TN3K): ``<root>/{image,p_image}/<n>.PNG|jpg`` and
``<root>/{mask,p_mask}/<n>.PNG|jpg``. Masks are binarised (JPEG noise) into lesion label 1.
"""

from __future__ import annotations

from pathlib import Path

from sonofm.data.importers import _common as common
from sonofm.errors import DataError, UserError


def _folder_pairs(idir: Path, mdir: Path, split: str | None, name: str) -> list[tuple]:
    """(image, mask with the same stem or None, split, name) for every image of ``idir``."""
    out = []
    for p in sorted(idir.iterdir()):
        if p.suffix.lower() in common.IMAGE_SUFFIXES:
            m = next((q for q in mdir.glob(p.stem + ".*")), None) if mdir.is_dir() else None
            out.append((p, m, split, name))
    return out


def _pairs(src: Path) -> list[tuple[Path, Path | None, str | None, str]]:
    """(image, mask, fixed split or None, dataset name) for a TN3K or DDTI folder."""
    if (src / "trainval-image").is_dir() or (src / "test-image").is_dir():
        out = []
        for part, split in (("trainval", None), ("test", "test")):
            idir, mdir = src / f"{part}-image", src / f"{part}-mask"
            if idir.is_dir():
                out += _folder_pairs(idir, mdir, split, "tn3k")
        return out
    for idir_name, mdir_name in (("p_image", "p_mask"), ("image", "mask")):
        if (src / idir_name).is_dir():
            return _folder_pairs(src / idir_name, src / mdir_name, None, "ddti")
    raise UserError(f"{src}: not a TN3K (trainval-image/, test-image/) or DDTI (image/, mask/) folder")


def import_thyroid(src: str | Path, out: str | Path) -> common.ImportResult:
    """Import TN3K or DDTI (detected from the layout) with nodule masks and boxes."""
    src = common.require_dir(src, "TN3K/DDTI")
    out = Path(out)
    rows, skips = [], common.Skips()
    for img_path, mask_path, split, name in _pairs(src):
        rid = common.safe_id(f"{name}_{img_path.parent.name}_{img_path.stem}")
        rel = img_path.relative_to(src)
        if mask_path is None:
            skips.add(rel, "missing_mask", "no mask with the same stem")
            continue
        try:
            img = common.load_gray(img_path)
            lab = common.binary_to_labels([common.load_gray(mask_path)], 1, img.shape)
        except DataError as err:
            skips.add(rel, "unreadable", str(err))
            continue
        row = common.image_row(out, rid, img, lab, split=split or common.split_of(rid, (0.89, 0.11)))
        row |= common.lesion_fields("thyroid", "thyroid", "nodule", lab)
        rows.append(row | {"report": "Thyroid ultrasound: thyroid nodule.", "source": name})
    return common.finish_dataset(
        rows,
        out,
        skips,
        tool="sonofm ingest tn3k",
        name=src.name,
        description="Thyroid nodule ultrasound (TN3K / DDTI) with nodule masks.",
    )
