"""Manifest value checks: one cell against its column's kind and the taxonomy's vocabularies.

Each check returns the value as a Python object (nested values parsed from JSON text, numbers
as floats, ids checked against the taxonomy) or raises `_CellError` with the end of a message
"column 'x' ..."; `normalize_records` in :mod:`sonofm.data.manifest` turns those into one error.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pandas as pd

from sonofm import taxonomy
from sonofm.data.manifest_schema import _BY_NAME, SPLITS


class _CellError(ValueError):
    """A value that does not fit its column; the message completes "column 'x' ..."."""


def _vocab() -> dict[str, Any]:
    """Taxonomy vocabularies used to check ids."""
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
