"""The manifest's columns as data: name, required or not, kind of value, Arrow type, meaning.

`COLUMNS` is the single source of truth that validation, reading and writing follow (see
:mod:`sonofm.data.manifest` for the table in words); kept apart so it can be read on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

SPLITS = ("train", "val", "test")


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
