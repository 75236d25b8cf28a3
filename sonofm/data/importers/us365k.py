"""US-365K (the Ultrasound-CLIP corpus): images with captions in JSON plus JSONL caption files.

Layout: ``<root>/images/...`` and one or more annotation files, either a JSON array / object of
samples or JSONL lines, each ``{"image": "images/x.jpg", "caption": "..."}`` (the keys
``image_path``/``img``/``file_name`` and ``text``/``report``/``caption`` are accepted, and an
optional ``patient_id``/``case_id``). Captions from several files for one image are joined.
Captions are parsed by `sonofm.reports` into region, organ and attributes.
"""

from __future__ import annotations

from pathlib import Path

from sonofm.data.dicom.reports import report_fields
from sonofm.data.importers._common import (
    ImportResult,
    Skips,
    finish_dataset,
    image_row,
    load_gray,
    require_dir,
    safe_id,
    split_of,
)
from sonofm.data.importers.sharegpt import read_json_records
from sonofm.errors import DataError, UserError

_IMG_KEYS = ("image", "image_path", "img", "file_name", "filename")
_TXT_KEYS = ("caption", "text", "report", "description")


def _first(rec: dict, keys: tuple[str, ...]) -> str | None:
    for k in keys:
        if rec.get(k):
            return str(rec[k])
    return None


def import_us365k(src: str | Path, out: str | Path) -> ImportResult:
    """Import US-365K: one row per image with its (joined) captions as the report."""
    root = require_dir(src, "US-365K")
    files = sorted(root.glob("*.json")) + sorted(root.glob("*.jsonl"))
    if not files:
        raise UserError(f"{root}: no .json/.jsonl caption files (expected e.g. captions.jsonl)")
    out = Path(out)
    skips = Skips()
    captions: dict[str, list[str]] = {}
    patients: dict[str, str] = {}
    for f in files:
        for i, rec in enumerate(read_json_records(f)):
            img, txt = (
                (_first(rec, _IMG_KEYS), _first(rec, _TXT_KEYS)) if isinstance(rec, dict) else (None, None)
            )
            if img is None or txt is None:
                skips.add(f"{f.name}[{i}]", "bad_record", "needs an image path and a caption")
                continue
            texts = captions.setdefault(img, [])
            if txt not in texts:
                texts.append(txt)
            pid = rec.get("patient_id") or rec.get("case_id")
            if pid:
                patients[img] = str(pid)
    rows = []
    for rel in sorted(captions):
        rid = safe_id(f"us365k_{Path(rel).with_suffix('')}")
        try:
            arr = load_gray(root / rel)
        except DataError as err:
            skips.add(rel, "unreadable", str(err))
            continue
        pid = patients.get(rel, rid)
        text = " ".join(captions[rel])
        rows.append(
            image_row(
                out, rid, arr, split=split_of(pid), patient_id=pid, source="us365k", **report_fields(text)
            )
        )
    return finish_dataset(
        rows,
        out,
        skips,
        tool="sonofm ingest us365k",
        name="us365k",
        description="US-365K image-caption pairs (Ultrasound-CLIP).",
    )
