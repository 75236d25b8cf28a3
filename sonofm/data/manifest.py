"""The manifest of a sonofm dataset directory: schema, validation, reading and writing.

A dataset directory (``sonofm simulate``, ``sonofm ingest`` and the importers all write one) holds
``manifest.parquet`` with one row per image, ``images/`` and ``masks/`` (PNG) and ``dataset.json``
(the card, see :mod:`sonofm.data.card`). Readers also accept ``manifest.csv`` and
``manifest.jsonl`` with the same columns so that a user can hand-write one.

Columns (``COLUMNS`` in :mod:`sonofm.data.manifest_schema` is the single source of truth;
``describe_schema()`` prints it):

=================  ========  ===============================================================
column             required  meaning
=================  ========  ===============================================================
id                 yes       unique image id (also the PNG file stem when simulated)
image              yes       image path relative to the manifest's directory (or absolute)
split              yes       train / val / test, assigned per patient
patient_id         no        defaults to ``id``; splits must not share a patient
study_id           no        defaults to ``patient_id``; images of one acquisition
mask               no        label-map PNG path (``sonofm.taxonomy.MASK_LABELS`` ids) or null
region, organ      no        taxonomy region / organ ids
view, frame        no        e.g. echo view "A4C" and frame "ED"
report             no        full report text
attributes         no        {dimension: [tag ids]} over ``sonofm.taxonomy.DIMENSIONS``
diagnosis          no        taxonomy diagnosis tag id
malignant          no        bool or null
measurements       no        {measurement id (unit in the name): float}
landmarks          no        {name: [x, y]} pixel coordinates
bbox               no        [[x0, y0, x1, y1], ...] pixel boxes, one per lesion
pixel_spacing_mm   no        isotropic pixel size in millimetres, > 0
source             no        where the row came from ("sim", "dicom", an importer name)
sex                no        "F", "M" or null
imaging            no        free-form acquisition parameters (dict)
structured         no        ``sonofm.reports.Study.to_dict()`` ground truth (dict)
=================  ========  ===============================================================

Storage of nested columns. In Parquet, ``attributes`` is ``map<string, list<string>>``,
``measurements`` ``map<string, double>``, ``landmarks`` ``map<string, list<double>>`` and
``bbox`` ``list<list<double>>`` (native Arrow types: pandas, DuckDB and Polars read them without
sonofm); ``imaging`` and ``structured`` are free-form and stored as JSON text. In CSV every nested
column is a JSON string (an empty cell means null/empty); in JSONL they are plain JSON values (a
JSON string holding JSON is accepted too). :func:`read_manifest` always returns them as Python
dicts/lists, validated, with every column present.

Rows in error messages are numbered from 1 in file order (for a CSV, row 1 is the first line
after the header). The per-cell checks live in :mod:`sonofm.data.manifest_cells`.
"""

from __future__ import annotations

import json
import logging
import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sonofm.atomic import atomic_write
from sonofm.data.manifest_cells import _CellError, _check_cell, _is_missing, _short, _vocab
from sonofm.data.manifest_schema import (  # noqa: F401 (Column and describe_schema re-exported)
    _BY_NAME,
    _NESTED_KINDS,
    COLUMN_NAMES,
    COLUMNS,
    REQUIRED_COLUMNS,
    SPLITS,
    Column,
    describe_schema,
)
from sonofm.errors import DataError

log = logging.getLogger(__name__)

# The dataset directory's file names: spelled here only (`DatasetDir` hands out the paths).
MANIFEST_FILE = "manifest.parquet"  # what producers write; readers also take the CSV/JSONL forms
CARD_FILE = "dataset.json"
MANIFEST_NAMES = (MANIFEST_FILE, "manifest.csv", "manifest.jsonl")
FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_SUFFIXES = ".parquet, .csv or .jsonl"
MANIFEST_VERSION = "1"
_MAX_REPORTED = 3  # problems spelled out in one error line; the rest are counted


# ----------------------------------------------------------------------------- normalisation


def normalize_records(records: list[dict[str, Any]], *, source: str = "manifest") -> list[dict[str, Any]]:
    """Validate raw rows and return them with every column present and nested values as Python objects.

    `source` names the file in error messages. Raises one `DataError` line naming the first
    problems as "<source> row <n> (id=<id>): column '<col>' <what was expected>".
    """
    if not records:
        raise DataError(f"{source}: the manifest has no rows")
    present = set().union(*(r.keys() for r in records))
    missing = [c for c in REQUIRED_COLUMNS if c not in present]
    if missing:
        raise DataError(
            f"{source}: missing required column(s) {', '.join(repr(m) for m in missing)} "
            f"(required: {', '.join(REQUIRED_COLUMNS)}; found: {', '.join(sorted(present)) or 'none'})"
        )
    cache: dict[str, Any] = {}

    def vocab() -> dict[str, Any]:
        if "v" not in cache:
            cache["v"] = _vocab()
        return cache["v"]

    problems: list[str] = []
    out: list[dict[str, Any]] = []
    seen_ids: dict[str, int] = {}
    for i, raw in enumerate(records, start=1):
        rid = raw.get("id")
        where = f"{source} row {i}" + (f" (id={rid})" if isinstance(rid, str) and rid else "")
        row: dict[str, Any] = {}
        for col in COLUMN_NAMES:
            try:
                row[col] = _check_cell(col, raw.get(col), vocab)
            except _CellError as err:
                problems.append(f"{where}: column '{col}' {err}")
                row[col] = None
        for col, val in raw.items():  # user columns pass through untouched
            if col not in _BY_NAME:
                row[col] = None if _is_missing(val) else val
        if row["patient_id"] is None:
            row["patient_id"] = row["id"]
        if row["study_id"] is None:
            row["study_id"] = row["patient_id"]
        if row["id"] is not None:
            if row["id"] in seen_ids:
                first = seen_ids[row["id"]]
                problems.append(f"{where}: column 'id' must be unique, {row['id']!r} is also row {first}")
            else:
                seen_ids[row["id"]] = i
        out.append(row)
    split_of: dict[str, tuple[str, int]] = {}
    for i, row in enumerate(out, start=1):
        pid, split = row["patient_id"], row["split"]
        if pid is None or split is None:
            continue
        if pid in split_of and split_of[pid][0] != split:
            prev_split, prev_row = split_of[pid]
            problems.append(
                f"{source} row {i} (id={row['id']}): column 'split' is {split!r} but patient {pid!r} is in "
                f"{prev_split!r} at row {prev_row} (splits are per patient)"
            )
        split_of.setdefault(pid, (split, i))
    if problems:
        more = len(problems) - _MAX_REPORTED
        tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more > 0 else ""
        raise DataError("; ".join(problems[:_MAX_REPORTED]) + tail)
    return out


def _to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    extra = {c for r in rows for c in r if c not in _BY_NAME}
    cols = list(COLUMN_NAMES) + sorted(extra)
    # object dtype keeps None as None and nested values as Python objects (pandas 3 would turn
    # strings into a StringDtype with NaN for missing values).
    df = pd.DataFrame({c: pd.Series([r.get(c) for r in rows], dtype=object) for c in cols})
    df["pixel_spacing_mm"] = pd.to_numeric(df["pixel_spacing_mm"]).astype("float64")
    return df


# ----------------------------------------------------------------------------- reading


def find_manifest(path: str | Path) -> Path:
    """The manifest file of `path`: the file itself, or the first of MANIFEST_NAMES in a directory."""
    p = Path(path)
    if p.is_dir():
        for name in MANIFEST_NAMES:
            if (p / name).is_file():
                return p / name
        raise DataError(f"{p}: no manifest found (expected one of {', '.join(MANIFEST_NAMES)})")
    if not p.exists():
        raise DataError(f"{p}: manifest not found")
    if p.suffix.lower() not in FORMATS:
        raise DataError(f"{p}: unsupported manifest format {p.suffix!r} (expected {_SUFFIXES})")
    return p


def _read_raw(path: Path) -> list[dict[str, Any]]:
    fmt = FORMATS[path.suffix.lower()]
    name = path.name
    if fmt == "parquet":
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as err:
            raise DataError(f"{path}: not a readable Parquet file ({err})") from None
        cols = {n: table.column(n).to_pylist() for n in table.column_names}
        return [{n: cols[n][i] for n in cols} for i in range(table.num_rows)]
    if fmt == "csv":
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise DataError(f"{path}: not a readable CSV file ({err})") from None
        df.columns = [str(c).strip() for c in df.columns]
        return [{k: (None if v == "" else v) for k, v in r.items()} for r in df.to_dict("records")]
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{name} line {lineno}: invalid JSON ({err.msg} at char {err.pos})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{name} line {lineno}: expected a JSON object per line, got {_short(obj)}")
            rows.append(obj)
    return rows


def read_manifest(path: str | Path, *, check_files: bool = False) -> pd.DataFrame:
    """Read and validate a manifest (a dataset dir, or a .parquet/.csv/.jsonl file).

    Returns a DataFrame with every column of ``COLUMNS`` (plus any extra user columns), object
    dtype except ``pixel_spacing_mm`` (float64, NaN when unknown); nested columns as dicts/lists;
    missing optional values as None. ``df.attrs["root"]`` is the directory that relative image
    paths are relative to. With ``check_files`` every image and mask path must exist.
    """
    mpath = find_manifest(path)
    stat = mpath.stat()
    key = (str(mpath.resolve()), stat.st_mtime_ns, stat.st_size)
    df = _MANIFESTS.get(key)
    if df is None:
        rows = normalize_records(_read_raw(mpath), source=mpath.name)
        df = _to_frame(rows)
        df.attrs["root"] = str(mpath.parent.resolve())
        df.attrs["manifest"] = key[0]
        _MANIFESTS[key] = df
        while len(_MANIFESTS) > _MANIFESTS_KEPT:
            _MANIFESTS.popitem(last=False)
    else:
        _MANIFESTS.move_to_end(key)
    if check_files:
        check_files_exist(df.to_dict("records"), df.attrs["root"], source=mpath.name)
    return df.copy()  # callers may add or drop columns; the cached frame stays as read


# Parsed manifests by (file, mtime, size): one job reads its manifest for the train and validation
# loaders, the data statistics, the head classes and the hard negatives, and the demo runs three
# jobs in one process; parsing a 10k-row manifest's nested cells takes ~2 s each time.
_MANIFESTS: OrderedDict[tuple[str, int, int], pd.DataFrame] = OrderedDict()
_MANIFESTS_KEPT = 4


def check_files_exist(
    rows: Iterable[Mapping[str, Any]], root: str | Path, *, source: str = "manifest"
) -> None:
    """Raise one DataError line if any image/mask path of the rows is missing under `root`."""
    root = Path(root)
    problems = []
    for i, row in enumerate(rows, start=1):
        for col in ("image", "mask"):
            rel = row.get(col)
            if rel is None:
                continue
            p = Path(rel) if Path(rel).is_absolute() else root / rel
            if not p.is_file():
                where = f"{source} row {i} (id={row.get('id')})"
                problems.append(f"{where}: column '{col}' file {rel!r} does not exist")
    if problems:
        more = len(problems) - _MAX_REPORTED
        tail = f" (and {more} more missing file{'s' if more > 1 else ''})" if more > 0 else ""
        raise DataError("; ".join(problems[:_MAX_REPORTED]) + f"{tail} (paths are relative to {root})")


# ----------------------------------------------------------------------------- writing


def _records_of(data: pd.DataFrame | Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(data, pd.DataFrame):
        return [dict(r) for r in data.to_dict("records")]
    return [dict(r) for r in data]


def _jsonable(v: Any) -> Any:
    """Plain JSON types for nested values (numpy scalars/arrays and tuples become floats/lists)."""
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if hasattr(v, "tolist") and not isinstance(v, str):
        return _jsonable(v.tolist())
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _json_default(v: Any) -> Any:
    if hasattr(v, "tolist"):  # numpy scalars and arrays
        return v.tolist()
    if isinstance(v, Mapping):
        return dict(v)
    raise TypeError(f"{type(v).__name__} is not JSON serialisable")


def dumps_json(v: Any) -> str:
    """Deterministic compact JSON text (the byte-identical dataset contract relies on it).

    numpy values become plain numbers/lists; non-finite floats become null.
    """
    opts: dict[str, Any] = {"ensure_ascii": False, "separators": (",", ":"), "allow_nan": False}
    try:
        return json.dumps(v, default=_json_default, **opts)
    except ValueError:  # NaN/inf somewhere: take the slow path that nulls them
        return json.dumps(_jsonable(v), **opts)


def _arrow_table(rows: list[dict[str, Any]]) -> pa.Table:
    arrays, fields = [], []
    for col in COLUMNS:
        vals = [r.get(col.name) for r in rows]
        if col.kind == "json":
            vals = [None if v is None else dumps_json(v) for v in vals]
        elif col.kind in ("attributes", "measurements", "landmarks"):
            vals = [list((v or {}).items()) for v in vals]
        arrays.append(pa.array(vals, type=col.arrow))
        fields.append(pa.field(col.name, col.arrow))
    for name in sorted({c for r in rows for c in r if c not in _BY_NAME}):
        arr = pa.array([_jsonable(r.get(name)) for r in rows])
        arrays.append(arr)
        fields.append(pa.field(name, arr.type))
    meta = {b"sonofm.manifest_version": MANIFEST_VERSION.encode()}
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=meta))


def _csv_cell(col: str, v: Any) -> Any:
    if v is None:
        return ""
    spec = _BY_NAME.get(col)
    if spec is not None and spec.kind in _NESTED_KINDS:
        return dumps_json(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict | list | tuple):
        return dumps_json(v)
    return v


def write_manifest(data: pd.DataFrame | Iterable[Mapping[str, Any]], path: str | Path) -> Path:
    """Validate rows and write them atomically; the format follows the suffix.

    `path` may be a directory (writes ``manifest.parquet`` in it) or a file ending in .parquet,
    .csv or .jsonl. The same rows always give the same bytes.
    """
    path = Path(path)
    if path.suffix == "" or path.is_dir():
        path = DatasetDir.manifest_file(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unsupported manifest format {path.suffix!r} (expected {_SUFFIXES})")
    rows = normalize_records(_records_of(data), source=path.name)
    extra = sorted({c for r in rows for c in r if c not in _BY_NAME})
    cols = list(COLUMN_NAMES) + extra
    if fmt == "parquet":
        table = _arrow_table(rows)
        atomic_write(path, lambda p: pq.write_table(table, p, compression="zstd", write_statistics=False))
    elif fmt == "csv":
        cells = [{c: _csv_cell(c, r.get(c)) for c in cols} for r in rows]
        df = pd.DataFrame(cells, columns=cols, dtype=object)
        atomic_write(path, lambda p: df.to_csv(p, index=False, lineterminator="\n"))
    else:
        lines = [dumps_json({c: r.get(c) for c in cols}) for r in rows]
        atomic_write(path, lambda p: p.write_text("\n".join(lines) + "\n", encoding="utf-8"))
    log.info("wrote %d manifest rows to %s", len(rows), path)
    return path


# ----------------------------------------------------------------------------- dataset dir


@dataclass
class DatasetDir:
    """A dataset directory opened for reading: its validated manifest and its card.

    ``root`` is the directory relative paths refer to; ``card`` is ``dataset.json`` as a dict
    (empty when the directory has none, e.g. a hand-written manifest). The static methods are the
    one place that names a dataset directory's files, for producers that write them and tools
    that look at a directory without opening it.
    """

    root: Path
    manifest: pd.DataFrame
    card: dict[str, Any]

    @staticmethod
    def manifest_file(root: str | Path) -> Path:
        """Where a producer writes the manifest of the dataset directory `root`."""
        return Path(root) / MANIFEST_FILE

    @staticmethod
    def card_file(root: str | Path) -> Path:
        return Path(root) / CARD_FILE

    @staticmethod
    def read_card(root: str | Path) -> dict[str, Any]:
        """The card (``dataset.json``) of `root`: {} when there is none, DataError when unreadable."""
        card_path = DatasetDir.card_file(root)
        if not card_path.is_file():
            return {}
        try:
            return json.loads(card_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise DataError(f"{card_path}: invalid JSON ({err.msg} at line {err.lineno})") from None

    def __len__(self) -> int:
        return len(self.manifest)

    def split(self, name: str) -> pd.DataFrame:
        """Rows of one split (``train``/``val``/``test``), index reset."""
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; expected one of {'/'.join(SPLITS)}")
        return self.manifest[self.manifest["split"] == name].reset_index(drop=True)

    def path(self, rel: str | None) -> Path | None:
        """Absolute path of a manifest path (image or mask), None stays None."""
        if rel is None:
            return None
        p = Path(rel)
        return p if p.is_absolute() else self.root / p


def load_dataset(path: str | Path, *, check_files: bool = False) -> DatasetDir:
    """Open a dataset directory (or a manifest file) with its card, validated."""
    df = read_manifest(path, check_files=check_files)
    root = Path(df.attrs["root"])
    return DatasetDir(root=root, manifest=df, card=DatasetDir.read_card(root))
