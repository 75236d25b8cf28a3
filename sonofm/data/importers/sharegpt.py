"""Instruction data in ShareGPT / LLaVA JSON (EchoVLM, SonoVLM and most ultrasound VLM releases).

Layout: a JSON array (or JSONL) of samples ``{"id": ..., "image": "a.jpg" | ["a.jpg", ...],
"conversations": [{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", "value": "..."}]}``;
the ``messages`` form (``role`` user/assistant, ``content`` or ``value``) is accepted too. Image
paths are relative to ``--images`` (default: the JSON's folder). The report of each image is the
sample's ``description`` when present, else its first assistant answer, parsed by
`sonofm.reports` into region, organ and attributes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sonofm.data.dicom.reports import report_fields
from sonofm.data.importers._common import (
    ImportResult,
    Skips,
    finish_dataset,
    image_row,
    load_gray,
    safe_id,
    split_of,
)
from sonofm.errors import DataError, UserError


def read_json_records(path: Path) -> list[dict[str, Any]]:
    """A JSON array or JSONL file as a list of dicts (DataError naming the line)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        out = []
        for i, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}: line {i} is not valid JSON ({err.msg})") from None
        return out
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: invalid JSON ({err.msg} at line {err.lineno})") from None
    if isinstance(data, dict):
        data = next((v for v in data.values() if isinstance(v, list)), None)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON array of samples")
    return data


def _answer(sample: dict[str, Any]) -> str | None:
    if sample.get("description"):
        return str(sample["description"])
    for turn in sample.get("conversations") or sample.get("messages") or []:
        who = str(turn.get("from") or turn.get("role") or "").lower()
        if who in ("gpt", "assistant"):
            text = turn.get("value") or turn.get("content")
            if text:
                return str(text)
    return None


def import_sharegpt(
    src: str | Path, out: str | Path, *, images: str | Path | None = None, name: str = "echovlm"
) -> ImportResult:
    """Import a ShareGPT/LLaVA JSON file: one row per image, the answer as its report."""
    src = Path(src)
    if src.is_dir():
        cands = sorted(src.glob("*.json")) + sorted(src.glob("*.jsonl"))
        if not cands:
            raise UserError(f"{src}: no .json/.jsonl ShareGPT file in this folder")
        files = cands
    elif src.is_file():
        files = [src]
    else:
        raise UserError(f"{src}: ShareGPT JSON file not found")
    out = Path(out)
    rows, skips = [], Skips()
    for f in files:
        base = Path(images) if images is not None else f.parent
        for i, s in enumerate(read_json_records(f)):
            where = f"{f.name}[{i}]"
            if not isinstance(s, dict):
                skips.add(where, "bad_record", "not a JSON object")
                continue
            imgs = s.get("image") or s.get("images") or []
            imgs = [imgs] if isinstance(imgs, str) else list(imgs)
            text = _answer(s)
            if not imgs or text is None:
                skips.add(where, "bad_record", "sample without image or assistant answer")
                continue
            sid = safe_id(str(s.get("id", f"{f.stem}_{i}")))
            fields = report_fields(text)
            for k, rel in enumerate(imgs):
                rid = safe_id(f"{name}_{sid}_{k}")
                try:
                    img = load_gray(base / rel)
                except DataError as err:
                    skips.add(f"{where} {rel}", "unreadable", str(err))
                    continue
                rows.append(
                    image_row(
                        out,
                        rid,
                        img,
                        split=split_of(sid),
                        patient_id=sid,
                        study_id=sid,
                        source=name,
                        **fields,
                    )
                )
    return finish_dataset(
        rows,
        out,
        skips,
        tool=f"sonofm ingest {name}",
        name=name,
        description=f"{name} instruction data (ShareGPT JSON); answers as reports.",
    )
