"""Pairing DICOM studies with report text: a CSV/JSONL mapping parsed by `sonofm.reports`.

The mapping has a `report` (or `text`) column and one key column: `accession_number` /
`AccessionNumber` or `study_instance_uid` / `StudyInstanceUID`. Keys are matched against the
*original* header values (before de-identification); only the parsed text reaches the dataset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sonofm.errors import DataError
from sonofm.reports import parse_report, study_attributes
from sonofm.taxonomy import REGIONS

_ACC = ("accession_number", "AccessionNumber", "accession")
_UID = ("study_instance_uid", "StudyInstanceUID", "study_uid")
_TEXT = ("report", "text", "report_text")


@dataclass
class ReportIndex:
    by_accession: dict[str, str]
    by_study_uid: dict[str, str]

    def lookup(self, ds: Any) -> str | None:
        acc = str(ds.get("AccessionNumber", "") or "").strip()
        if acc and acc in self.by_accession:
            return self.by_accession[acc]
        uid = str(ds.get("StudyInstanceUID", "") or "").strip()
        return self.by_study_uid.get(uid) if uid else None


def _pick(row: dict[str, Any], names: tuple[str, ...]) -> str | None:
    for n in names:
        v = row.get(n)
        if v is not None and str(v).strip() and str(v).lower() != "nan":
            return str(v).strip()
    return None


def load_reports(path: str | Path) -> ReportIndex:
    """Read a .csv or .jsonl report mapping; errors name the file, row and expected columns."""
    import pandas as pd  # lazy: pandas (~0.3 s) only reads .csv mappings

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: report file not found")
    if path.suffix.lower() == ".csv":
        rows = pd.read_csv(path, dtype=str, keep_default_na=False).to_dict("records")
    elif path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}: line {i} is not valid JSON ({err.msg})") from None
    else:
        raise DataError(f"{path}: report mapping must be .csv or .jsonl, got {path.suffix!r}")
    acc: dict[str, str] = {}
    uid: dict[str, str] = {}
    for i, row in enumerate(rows, start=1):
        text = _pick(row, _TEXT)
        if text is None:
            raise DataError(f"{path}: row {i} has no report text (expected a column {'/'.join(_TEXT)})")
        a, u = _pick(row, _ACC), _pick(row, _UID)
        if a is None and u is None:
            raise DataError(
                f"{path}: row {i} has neither an accession number ({'/'.join(_ACC)}) "
                f"nor a study UID ({'/'.join(_UID)})"
            )
        if a is not None:
            acc[a] = text
        if u is not None:
            uid[u] = text
    return ReportIndex(by_accession=acc, by_study_uid=uid)


def report_fields(text: str) -> dict[str, Any]:
    """Manifest fields from report text: report, region, organ, attributes, measurements, diagnosis."""
    study = parse_report(text).study
    attrs = study_attributes(study)
    diag = attrs.get("diagnosis") or []
    return {
        "report": text,
        "region": study.region if study.region in REGIONS else None,
        "organ": study.organ,
        "view": study.view,
        "sex": study.sex,
        "attributes": attrs,
        "measurements": dict(study.measurements),
        "diagnosis": diag[0] if diag else None,
        "structured": study.to_dict(),
    }
