"""The manifest of a sonofm dataset directory: schema, validation, reading and writing.

A dataset directory (``sonofm simulate``, ``sonofm ingest`` and the importers all write one) holds
``manifest.parquet`` with one row per image, ``images/`` and ``masks/`` (PNG) and ``dataset.json``
(the card, see :mod:`sonofm.data.card`). Readers also accept ``manifest.csv`` and
``manifest.jsonl`` with the same columns so that a user can hand-write one.

Columns (``COLUMNS`` below is the single source of truth; ``describe_schema()`` prints it):

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
after the header).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sonofm.atomic import atomic_write
from sonofm.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MANIFEST_NAMES = ("manifest.parquet", "manifest.csv", "manifest.jsonl")
FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_SUFFIXES = ".parquet, .csv or .jsonl"
MANIFEST_VERSION = "1"
_MAX_REPORTED = 3  # problems spelled out in one error line; the rest are counted


class _CellError(ValueError):
    """A value that does not fit its column; the message completes "column 'x' ..."."""


@dataclass(frozen=True)
class Column:
    name: str
    required: bool
    kind: str  # str | float | bool | attributes | measurements | landmarks | bbox | json
    arrow: pa.DataType
    doc: str


_LIST_STR = pa.list_(pa.string())
_LIST_F64 = pa.list_(pa.float64())
COLUMNS: tuple[Column, ...] = (
    Column("id", True, "str", pa.string(), "unique image id"),
    Column("patient_id", False, "str", pa.string(), "patient id (defaults to id)"),
    Column("study_id", False, "str", pa.string(), "study id (defaults to patient_id)"),
    Column("split", True, "str", pa.string(), "train / val / test"),
    Column("image", True, "str", pa.string(), "image path relative to the manifest directory"),
    Column("mask", False, "str", pa.string(), "mask path or null"),
    Column("region", False, "str", pa.string(), "taxonomy region id"),
    Column("organ", False, "str", pa.string(), "taxonomy organ id"),
    Column("view", False, "str", pa.string(), "view (echo: A4C, PLAX, ...)"),
    Column("frame", False, "str", pa.string(), "frame (echo: ED / ES)"),
    Column("report", False, "str", pa.string(), "report text"),
    Column("attributes", False, "attributes", pa.map_(pa.string(), _LIST_STR), "dimension -> tag ids"),
    Column("diagnosis", False, "str", pa.string(), "taxonomy diagnosis tag id"),
    Column("malignant", False, "bool", pa.bool_(), "bool or null"),
    Column("measurements", False, "measurements", pa.map_(pa.string(), pa.float64()), "id -> value"),
    Column("landmarks", False, "landmarks", pa.map_(pa.string(), _LIST_F64), "name -> [x, y] pixels"),
    Column("bbox", False, "bbox", pa.list_(_LIST_F64), "[[x0, y0, x1, y1], ...] pixels"),
    Column("pixel_spacing_mm", False, "float", pa.float64(), "pixel size in mm"),
    Column("source", False, "str", pa.string(), "sim / dicom / importer name"),
    Column("sex", False, "str", pa.string(), "F / M / null"),
    Column("imaging", False, "json", pa.string(), "acquisition parameters (JSON text in Parquet)"),
    Column("structured", False, "json", pa.string(), "Study.to_dict() (JSON text in Parquet)"),
)
COLUMN_NAMES = tuple(c.name for c in COLUMNS)
REQUIRED_COLUMNS = tuple(c.name for c in COLUMNS if c.required)
_BY_NAME = {c.name: c for c in COLUMNS}
_NESTED_KINDS = ("attributes", "measurements", "landmarks", "bbox", "json")


def describe_schema() -> str:
    """A plain-text table of the manifest columns (for docs and ``--help``)."""
    rows = [f"{c.name:<17} {'required' if c.required else 'optional':<9} {c.doc}" for c in COLUMNS]
    return "\n".join(rows)


# ----------------------------------------------------------------------------- value checks


def _vocab() -> dict[str, Any]:
    """Taxonomy vocabularies used to check ids (imported lazily: taxonomy is a sibling package)."""
    from sonofm import taxonomy

    organs: set[str] = set()
    for region in taxonomy.REGIONS:
        organs.update(o.id for o in taxonomy.organs_in(region))
    # dicts keep the taxonomy order for messages and give O(1) membership tests
    return {
        "regions": dict.fromkeys(taxonomy.REGIONS),
        "organs": dict.fromkeys(sorted(organs)),
        "dimensions": dict.fromkeys(taxonomy.DIMENSIONS),
        "tags": {d: dict.fromkeys(t.id for t in taxonomy.tags(d)) for d in taxonomy.DIMENSIONS},
    }


def _fmt_choices(choices: Iterable[str], limit: int = 12) -> str:
    choices = list(choices)
    shown = "/".join(choices[:limit])
    return shown + (f"/... ({len(choices)} in all)" if len(choices) > limit else "")


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    if type(v) is float:
        return v != v  # NaN
    return v is pd.NA or v is pd.NaT


def _parse_json_cell(v: Any) -> Any:
    if isinstance(v, str):
        text = v.strip()
        if text == "":
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise _CellError(f"must be valid JSON, got {_short(v)} ({err.msg} at char {err.pos})") from None
    return v


def _short(v: Any, n: int = 60) -> str:
    r = repr(v)
    return r if len(r) <= n else r[: n - 3] + "..."


def _as_float(v: Any, what: str = "") -> float:
    prefix = f"{what} " if what else ""
    if isinstance(v, bool):
        raise _CellError(f"{prefix}must be a number, got {_short(v)}")
    try:
        f = float(v.strip() if isinstance(v, str) else v)
    except (TypeError, ValueError):
        raise _CellError(f"{prefix}must be a number, got {_short(v)}") from None
    if not math.isfinite(f):
        raise _CellError(f"{prefix}must be finite, got {_short(v)}")
    return f


def _as_mapping(v: Any) -> dict:
    """Dicts pass; Arrow maps arrive as lists of (key, value) pairs."""
    if isinstance(v, Mapping):
        return dict(v)
    if isinstance(v, list) and all(isinstance(p, tuple | list) and len(p) == 2 for p in v):
        return {k: val for k, val in v}
    raise _CellError(f"must be a JSON object, got {_short(v)}")


def _as_list(v: Any) -> list:
    if type(v) is list:
        return v
    if hasattr(v, "tolist") and not isinstance(v, str):  # numpy arrays from pandas/pyarrow
        v = v.tolist()
    if isinstance(v, list | tuple):
        return list(v)
    raise _CellError(f"must be a JSON list, got {_short(v)}")


def _check_str(col: str, v: Any, vocab: Callable[[], dict]) -> str | None:
    if _is_missing(v) or (isinstance(v, str) and v == "" and not _BY_NAME[col].required):
        if _BY_NAME[col].required:
            raise _CellError("is required but empty")
        return None
    if not isinstance(v, str):
        if isinstance(v, int | float) and col not in ("split",):
            v = str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)
        else:
            raise _CellError(f"must be a string, got {_short(v)}")
    if col in ("id", "image") and not v.strip():
        raise _CellError("is required but empty")
    if col == "split" and v not in SPLITS:
        raise _CellError(f"must be one of {'/'.join(SPLITS)}, got {v!r}")
    if col == "sex" and v not in ("F", "M"):
        raise _CellError(f"must be F, M or empty, got {v!r}")
    if col == "region" and v not in vocab()["regions"]:
        raise _CellError(f"must be a taxonomy region ({_fmt_choices(vocab()['regions'])}), got {v!r}")
    if col == "organ" and v not in vocab()["organs"]:
        raise _CellError(f"must be a taxonomy organ ({_fmt_choices(vocab()['organs'], 30)}), got {v!r}")
    if col == "diagnosis" and v not in vocab()["tags"]["diagnosis"]:
        raise _CellError(f"must be a diagnosis tag ({_fmt_choices(vocab()['tags']['diagnosis'])}), got {v!r}")
    return v


def _check_bool(v: Any) -> bool | None:
    if _is_missing(v):
        return None
    if isinstance(v, bool):
        return v
    if hasattr(v, "item") and not isinstance(v, str):  # numpy.bool_
        v = v.item()
        if isinstance(v, bool):
            return v
    if isinstance(v, int | float) and v in (0, 1):
        return bool(v)
    if isinstance(v, str):
        low = v.strip().lower()
        if low in ("", "null", "none", "na"):
            return None
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
    raise _CellError(f"must be true, false or empty, got {_short(v)}")


def _check_attributes(v: Any, vocab: Callable[[], dict]) -> dict[str, list[str]]:
    v = _parse_json_cell(v)
    if _is_missing(v):
        return {}
    out: dict[str, list[str]] = {}
    voc = vocab()
    for dim, tags in _as_mapping(v).items():
        if dim not in voc["dimensions"]:
            raise _CellError(f"has unknown dimension {dim!r} (valid: {'/'.join(voc['dimensions'])})")
        tags = [] if _is_missing(tags) else _as_list(tags)
        for t in tags:
            if t not in voc["tags"][dim]:
                valid = _fmt_choices(voc["tags"][dim], 30)
                raise _CellError(f"[{dim!r}] has unknown tag {t!r} (valid: {valid})")
        out[str(dim)] = [str(t) for t in tags]
    return out


def _check_measurements(v: Any) -> dict[str, float]:
    v = _parse_json_cell(v)
    if _is_missing(v):
        return {}
    out = {}
    for k, val in _as_mapping(v).items():
        if not isinstance(k, str) or not k:
            raise _CellError(f"keys must be measurement ids, got {_short(k)}")
        if _is_missing(val):  # a struct column written by pandas has every key, absent ones null
            continue
        out[k] = _as_float(val, f"[{k!r}]")
    return out


def _check_landmarks(v: Any) -> dict[str, list[float]]:
    v = _parse_json_cell(v)
    if _is_missing(v):
        return {}
    out = {}
    for k, pt in _as_mapping(v).items():
        if _is_missing(pt):  # as for measurements: null means absent
            continue
        pt = _as_list(pt)
        if len(pt) != 2:
            raise _CellError(f"[{k!r}] must be a point [x, y], got {_short(pt)}")
        out[str(k)] = [_as_float(pt[0], f"[{k!r}] x"), _as_float(pt[1], f"[{k!r}] y")]
    return out


def _check_bbox(v: Any) -> list[list[float]]:
    v = _parse_json_cell(v)
    if _is_missing(v):
        return []
    boxes = _as_list(v)
    if len(boxes) == 4 and all(isinstance(b, int | float) and not isinstance(b, bool) for b in boxes):
        boxes = [boxes]  # one bare box [x0, y0, x1, y1] is accepted for hand-written manifests
    out = []
    for i, b in enumerate(boxes):
        b = _as_list(b)
        if len(b) != 4:
            raise _CellError(f"box {i} must be [x0, y0, x1, y1], got {_short(b)}")
        x0, y0, x1, y1 = (_as_float(c, f"box {i}") for c in b)
        if x1 < x0 or y1 < y0:
            raise _CellError(f"box {i} must have x0 <= x1 and y0 <= y1, got {_short(b)}")
        out.append([x0, y0, x1, y1])
    return out


def _check_float(col: str, v: Any) -> float | None:
    if _is_missing(v) or (isinstance(v, str) and not v.strip()):
        return None
    f = _as_float(v)
    if col == "pixel_spacing_mm" and f <= 0:
        raise _CellError(f"must be > 0, got {_short(v)}")
    return f


def _check_json(v: Any) -> dict | None:
    v = _parse_json_cell(v)
    if _is_missing(v):
        return None
    if not isinstance(v, Mapping):
        raise _CellError(f"must be a JSON object, got {_short(v)}")
    return dict(v)


def _check_cell(col: str, v: Any, vocab: Callable[[], dict]) -> Any:
    kind = _BY_NAME[col].kind
    if kind == "str":
        return _check_str(col, v, vocab)
    if kind == "bool":
        return _check_bool(v)
    if kind == "float":
        return _check_float(col, v)
    if kind == "attributes":
        return _check_attributes(v, vocab)
    if kind == "measurements":
        return _check_measurements(v)
    if kind == "landmarks":
        return _check_landmarks(v)
    if kind == "bbox":
        return _check_bbox(v)
    return _check_json(v)


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
    rows = normalize_records(_read_raw(mpath), source=mpath.name)
    root = mpath.parent.resolve()
    if check_files:
        check_files_exist(rows, root, source=mpath.name)
    df = _to_frame(rows)
    df.attrs["root"] = str(root)
    df.attrs["manifest"] = str(mpath.resolve())
    return df


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
        path = path / "manifest.parquet"
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
    (empty when the directory has none, e.g. a hand-written manifest).
    """

    root: Path
    manifest: pd.DataFrame
    card: dict[str, Any]

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
    card: dict[str, Any] = {}
    card_path = root / "dataset.json"
    if card_path.is_file():
        try:
            card = json.loads(card_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise DataError(f"{card_path}: invalid JSON ({err.msg} at line {err.lineno})") from None
    return DatasetDir(root=root, manifest=df, card=card)
