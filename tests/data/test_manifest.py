"""Manifest schema: round trips through Parquet/CSV/JSONL and errors that name row and column."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sonofm.data.card import build_card, read_card, write_card
from sonofm.data.manifest import (
    COLUMN_NAMES,
    REQUIRED_COLUMNS,
    load_dataset,
    read_manifest,
    write_manifest,
)
from sonofm.errors import DataError


def _rows() -> list[dict]:
    return [
        {
            "id": "a1",
            "patient_id": "p1",
            "study_id": "p1-s0",
            "split": "train",
            "image": "images/a1.png",
            "mask": "masks/a1.png",
            "region": "thyroid",
            "organ": "thyroid",
            "view": None,
            "frame": None,
            "report": "Findings: a 9 mm hypoechoic solid nodule. Impression: TR4.",
            "attributes": {"diagnosis": ["nodule"], "echogenicity": ["hypoechoic"], "posterior": []},
            "diagnosis": "nodule",
            "malignant": True,
            "measurements": {"lesion_width_mm": 9.25, "lesion_height_mm": 11.0},
            "landmarks": {"tip": [10.5, 20.0]},
            "bbox": [[1.0, 2.0, 30.5, 40.0], [5.0, 5.0, 6.0, 7.0]],
            "pixel_spacing_mm": 0.125,
            "source": "sim",
            "sex": "F",
            "imaging": {"probe": "linear", "tgc_db": [0.0, 1.5], "realism": {"doppler_box": False}},
            "structured": {"region": "thyroid", "findings": [{"dimension": "shape", "tag": "oval"}]},
        },
        {
            "id": "b2",
            "patient_id": "p2",
            "study_id": "p2-s0",
            "split": "test",
            "image": "images/b2.png",
            "mask": None,
            "region": "heart",
            "organ": "heart",
            "view": "A4C",
            "frame": "ED",
            "report": "Normal LV size; EF 60 %, with a comma, and \"quotes\".",
            "attributes": {},
            "diagnosis": "normal",
            "malignant": None,
            "measurements": {"lvef_pct": 60.0},
            "landmarks": {},
            "bbox": [],
            "pixel_spacing_mm": None,
            "source": "sim",
            "sex": None,
            "imaging": None,
            "structured": None,
        },
    ]


def _same(df: pd.DataFrame, rows: list[dict]) -> None:
    assert list(df.columns[: len(COLUMN_NAMES)]) == list(COLUMN_NAMES)
    for got, want in zip(df.to_dict("records"), rows, strict=True):
        for col in COLUMN_NAMES:
            g, w = got[col], want[col]
            if col == "pixel_spacing_mm" and w is None:
                assert pd.isna(g)
            else:
                assert g == w, (col, g, w)


@pytest.mark.parametrize("name", ["manifest.parquet", "manifest.csv", "manifest.jsonl"])
def test_round_trip_keeps_nested_columns(tmp_path, name):
    path = write_manifest(_rows(), tmp_path / name)
    df = read_manifest(path)
    _same(df, _rows())
    assert df.attrs["root"] == str(tmp_path.resolve())
    # Writing what was read gives the same bytes (deterministic serialisation).
    before = path.read_bytes()
    write_manifest(df, path)
    assert path.read_bytes() == before


def test_directory_finds_manifest_and_defaults(tmp_path):
    rows = [{"id": "x", "image": "x.png", "split": "val"}]
    write_manifest(rows, tmp_path / "manifest.jsonl")
    df = read_manifest(tmp_path)
    row = df.iloc[0]
    assert row["patient_id"] == "x" and row["study_id"] == "x"
    assert row["attributes"] == {} and row["bbox"] == [] and row["mask"] is None and row["malignant"] is None


def test_parquet_uses_native_nested_types(tmp_path):
    path = write_manifest(_rows(), tmp_path)
    schema = pq.read_schema(path)
    attrs, meas, bbox = (schema.field(c).type for c in ("attributes", "measurements", "bbox"))
    assert pa.types.is_map(attrs) and attrs.item_type.value_type == pa.string()
    assert pa.types.is_map(meas) and meas.item_type == pa.float64()
    assert pa.types.is_list(bbox) and bbox.value_type.value_type == pa.float64()
    assert schema.field("imaging").type == pa.string()  # free-form: JSON text
    plain = pd.read_parquet(path)  # readable without sonofm
    assert dict(plain.loc[0, "measurements"])["lesion_width_mm"] == 9.25
    assert json.loads(plain.loc[0, "imaging"])["tgc_db"] == [0.0, 1.5]


def test_hand_written_csv(tmp_path):
    (tmp_path / "manifest.csv").write_text(
        "id,image,split,attributes,bbox,malignant,measurements\n"
        'u1,a.png,train,"{""shape"": [""oval""]}","[1, 2, 3, 4]",yes,"{""lvef_pct"": ""55""}"\n'
        "u2,b.png,val,,,,\n"
    )
    df = read_manifest(tmp_path / "manifest.csv")
    assert df.loc[0, "attributes"] == {"shape": ["oval"]}
    assert df.loc[0, "bbox"] == [[1.0, 2.0, 3.0, 4.0]]  # one bare box is accepted
    assert df.loc[0, "malignant"] is True and df.loc[1, "malignant"] is None
    assert df.loc[0, "measurements"] == {"lvef_pct": 55.0}


def _write_csv(path, rows):
    pd.DataFrame(rows).to_csv(path, index=False)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"split": "training"},
            "manifest.csv row 2 (id=b2): column 'split' must be one of train/val/test, got 'training'",
        ),
        ({"region": "brain"}, "row 2 (id=b2): column 'region' must be a taxonomy region"),
        ({"attributes": '{"colour": ["red"]}'}, "row 2 (id=b2): column 'attributes' has unknown dimension"),
        ({"attributes": '{"shape": ["square"]}'}, "column 'attributes' ['shape'] has unknown tag 'square'"),
        ({"bbox": "[[5, 5, 1, 1]]"}, "row 2 (id=b2): column 'bbox' box 0 must have x0 <= x1 and y0 <= y1"),
        ({"bbox": "[[1, 2, 3]]"}, "column 'bbox' box 0 must be [x0, y0, x1, y1]"),
        ({"measurements": '{"lvef_pct": "hi"}'}, "'measurements' ['lvef_pct'] must be a number, got 'hi'"),
        ({"landmarks": '{"apex": [1]}'}, "column 'landmarks' ['apex'] must be a point [x, y]"),
        ({"malignant": "maybe"}, "column 'malignant' must be true, false or empty, got 'maybe'"),
        ({"pixel_spacing_mm": "-0.1"}, "column 'pixel_spacing_mm' must be > 0"),
        ({"imaging": "{not json"}, "column 'imaging' must be valid JSON"),
        ({"sex": "X"}, "column 'sex' must be F, M or empty, got 'X'"),
        ({"id": "a1"}, "row 2 (id=a1): column 'id' must be unique, 'a1' is also row 1"),
        ({"patient_id": "p1"}, "column 'split' is 'test' but patient 'p1' is in 'train' at row 1"),
        ({"image": ""}, "row 2 (id=b2): column 'image' is required but empty"),
    ],
)
def test_validation_errors_name_row_and_column(tmp_path, change, expected):
    rows = [{k: (json.dumps(v) if isinstance(v, dict | list) else v) for k, v in r.items()} for r in _rows()]
    rows[1].update(change)
    _write_csv(tmp_path / "manifest.csv", rows)
    with pytest.raises(DataError) as info:
        read_manifest(tmp_path / "manifest.csv")
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_required_column_and_many_problems(tmp_path):
    _write_csv(tmp_path / "manifest.csv", [{"id": "a", "image": "a.png"}])
    with pytest.raises(DataError, match=r"missing required column\(s\) 'split' \(required: id, split, image"):
        read_manifest(tmp_path / "manifest.csv")
    assert REQUIRED_COLUMNS == ("id", "split", "image")
    bad = [{"id": f"r{i}", "image": "a.png", "split": "nope"} for i in range(6)]
    _write_csv(tmp_path / "manifest.csv", bad)
    with pytest.raises(DataError, match=r"row 1 \(id=r0\).*row 3 \(id=r2\).* \(and 3 more problems\)$"):
        read_manifest(tmp_path / "manifest.csv")


def test_jsonl_bad_line_and_bad_files(tmp_path):
    (tmp_path / "manifest.jsonl").write_text('{"id": "a", "image": "a.png", "split": "train"}\n{oops\n')
    with pytest.raises(DataError, match=r"manifest.jsonl line 2: invalid JSON"):
        read_manifest(tmp_path / "manifest.jsonl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no manifest found"):
        read_manifest(tmp_path / "empty")
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(DataError, match="unsupported manifest format '.txt'"):
        read_manifest(tmp_path / "m.txt")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_manifest(tmp_path / "broken.parquet")


def test_check_files(tmp_path):
    write_manifest(_rows(), tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a1.png").write_bytes(b"x")
    (tmp_path / "images" / "b2.png").write_bytes(b"x")
    with pytest.raises(DataError, match=r"row 1 \(id=a1\): column 'mask' file 'masks/a1.png' does not exist"):
        read_manifest(tmp_path, check_files=True)
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "a1.png").write_bytes(b"x")
    assert len(read_manifest(tmp_path, check_files=True)) == 2


def test_write_is_atomic_and_validates_first(tmp_path):
    path = write_manifest(_rows(), tmp_path)
    before = path.read_bytes()
    bad = _rows()
    bad[0]["split"] = "training"
    with pytest.raises(DataError, match="manifest.parquet row 1"):
        write_manifest(bad, tmp_path)
    assert path.read_bytes() == before  # the old manifest is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.parquet"]  # no temp files left


def test_card_and_load_dataset(tmp_path):
    path = write_manifest(_rows(), tmp_path)
    df = read_manifest(path)
    card = build_card(df, created_by={"tool": "test", "seed": 3}, manifest_file=path)
    write_card(card, tmp_path)
    got = read_card(tmp_path)
    assert got["num_images"] == 2 and got["num_patients"] == 2
    assert got["splits"]["train"]["images"] == 1 and got["splits"]["val"]["images"] == 0
    assert got["counts"]["region"] == {"heart": 1, "thyroid": 1}
    assert got["counts"]["view"] == {"A4C": 1, "none": 1}
    assert got["counts"]["malignant"] == {"none": 1, "true": 1}
    assert got["attribute_counts"]["echogenicity"] == {"hypoechoic": 1}
    assert got["mask_labels"]["1"] == "lesion" and got["mask_labels"]["10"] == "plaque"
    assert got["created_by"]["seed"] == 3 and "sonofm_version" in got["created_by"]
    assert len(got["manifest"]["sha256"]) == 64
    ds = load_dataset(tmp_path)
    assert ds.card == got and len(ds) == 2
    assert list(ds.split("test")["id"]) == ["b2"]
    assert ds.path("images/a1.png") == tmp_path.resolve() / "images/a1.png"
    with pytest.raises(DataError, match="unknown split 'dev'"):
        ds.split("dev")


def test_a_manifest_is_parsed_once_until_it_changes(tmp_path, monkeypatch) -> None:
    import sonofm.data.manifest as manifest

    calls = []
    original = manifest.normalize_records
    monkeypatch.setattr(manifest, "normalize_records", lambda *a, **k: calls.append(1) or original(*a, **k))
    path = write_manifest(_rows(), tmp_path)
    calls.clear()  # writing validates the rows too
    first = read_manifest(tmp_path)
    first["extra"] = 1  # a caller's change does not reach the next reader
    del first["report"]  # mutated in place
    second = read_manifest(tmp_path)
    assert len(calls) == 1
    assert "extra" not in second.columns and "report" in second.columns
    _same(second, _rows())
    rows = _rows()[:1]
    write_manifest(rows, path)  # rewritten (atomically: a new file) -> parsed again
    calls.clear()
    third = read_manifest(tmp_path)
    assert len(calls) == 1 and len(third) == 1
