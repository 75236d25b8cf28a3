"""The hostile corpus through ingest, pretrain, eval, index and serve.

For every item: one clear line, or skipped and reported; never a traceback; never a loss of what
was already written. A 30000x30000 PNG bomb (~110 kB), broken images and DICOM, a path escape,
NaN, duplicate ids, a non-UTF-8 and a huge report are generated in the test.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import yaml

from sonofm.data.manifest import read_manifest, write_manifest

from .conftest import TRAIN, assert_one_line_error, cli
from .corpus import bomb_png, good_png, hostile_dicoms, hostile_images
from .phi import FILE_NAME, write_seeded

SUITE = {"name": "hostile", "n_boot": 10, "seed": 0, "batch_size": 16,
         "tasks": [{"type": "zeroshot_classification", "target": "region"},
                   {"type": "retrieval", "positives": "report"}]}


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Path:
    from sonofm.sim.generator import simulate_dataset

    return Path(simulate_dataset(tmp_path_factory.mktemp("sim") / "data", 30, size=32, seed=0,
                                 regions="thyroid,breast"))


@pytest.fixture(scope="module")
def hostile_data(sim, tmp_path_factory) -> tuple[Path, list[str]]:
    """The simulated dataset plus one train and one val row per hostile image, a path escape and a
    huge report; returns the folder and the ids that must be skipped."""
    out = tmp_path_factory.mktemp("hostile") / "data"
    shutil.copytree(sim, out)
    rows = read_manifest(out).to_dict("records")
    template = dict(rows[0], mask=None, landmarks=None, bbox=None)
    bad = []
    for i, (name, data) in enumerate(hostile_images().items()):
        (out / "images" / name).write_bytes(data)
        for split in ("train", "val"):
            rid = f"hostile-{split}-{name}"
            row = dict(template, id=rid, patient_id=f"hp{i}{split}", split=split, image=f"images/{name}")
            rows.append(row)
            bad.append(rid)
    escape = "../../../../../etc/passwd"  # a path out of the dataset, to a file that is no image
    rows.append(dict(template, id="escape", patient_id="hpx", split="train", image=escape))
    bad.append("escape")
    rows[1] = dict(rows[1], report="Thyroid nodule. " * 20000)  # ~320 kB of report text
    write_manifest(rows, out)
    return out, bad


def _no_traceback(code: int, out: str) -> None:
    assert "Traceback" not in out, out
    assert code in (0, 2), out


def test_ingest_skips_every_hostile_file_and_keeps_what_it_wrote(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name, data in hostile_dicoms().items():
        (src / name).write_bytes(data)
    write_seeded(src)  # one good (PHI-seeded) file among them
    out, key = tmp_path / "ds", tmp_path / "key"
    code, msg = cli("ingest", "dicom", src, "--out", out, "--key-file", key, "--new-key", "--frames", "1")
    assert code == 0, msg
    rep = json.loads((out / "ingest_report.json").read_text())
    assert rep["ingested_files"] == 1 and len(rep["skipped_files"]) == len(hostile_dicoms())
    assert all(s["reason"] and s["detail"] for s in rep["skipped_files"])
    assert "Traceback" not in msg and FILE_NAME not in msg
    rows = read_manifest(out)
    # a second run over the same corpus loses nothing and duplicates nothing
    code, msg = cli("ingest", "dicom", src, "--out", out, "--key-file", key, "--frames", "1")
    assert code == 0, msg
    assert read_manifest(out).equals(rows)


def test_decode_limits_bombs_before_decoding():
    import time

    from sonofm.data.decode import ImageDecodeError, decode_image

    t0 = time.perf_counter()
    with pytest.raises(ImageDecodeError, match="decompression-bomb guard"):
        decode_image(bomb_png())
    assert time.perf_counter() - t0 < 2.0  # refused from the header, not after 900 MB of pixels
    for name, data in hostile_images().items():
        with pytest.raises(ImageDecodeError):
            decode_image(data, name=name)
    assert decode_image(good_png()).shape == (40, 40)


def test_pretrain_eval_and_index_skip_and_report(hostile_data, model_yaml, tmp_path):
    data, bad = hostile_data
    run = tmp_path / "run"
    code, out = cli("pretrain", "--data", data, "--out", run, "--epochs", "1", "--batch-size", "8",
                    f"model={model_yaml}", *TRAIN)
    assert code == 0, out
    logged = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    n_train_bad = sum(1 for b in bad if "train" in b or b == "escape")
    assert max(r.get("skipped_samples", 0) for r in logged) >= n_train_bad
    assert "undecodable images skipped" in out

    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump(SUITE))
    code, out = cli("eval", "--model", run / "model", "--data", data, "--out", tmp_path / "eval",
                    "--suite", suite, "--no-cache", "--no-html", "--device", "cpu")
    _no_traceback(code, out)
    assert code == 0, out
    assert (tmp_path / "eval" / "results.json").is_file()

    code, out = cli("index", "build", "--model", run / "model", "--data", data, "--out", tmp_path / "idx",
                    "--device", "cpu")
    assert code == 0, out
    info = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert info["n_skipped"] == len(bad)


@pytest.mark.parametrize("problem", ["duplicate_ids", "nan", "non_utf8_report", "missing_file"])
def test_bad_manifests_are_one_line_or_skipped(problem, sim, model_yaml, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(sim, data)
    df = read_manifest(data)
    rows = df.to_dict("records")
    if problem == "duplicate_ids":
        rows[2]["id"] = rows[1]["id"]
    elif problem == "nan":
        rows[2]["pixel_spacing_mm"] = float("nan")
        rows[3]["measurements"] = {"size_mm": float("nan")}
    elif problem == "missing_file":
        rows[2]["image"] = "images/not-there.png"
    if problem == "non_utf8_report":
        csv = data / "manifest.csv"
        df[["id", "patient_id", "split", "image", "report"]].to_csv(csv, index=False)
        csv.write_bytes(csv.read_bytes().replace(b"Thyroid", b"Thyro\xefd\xff", 1))
        target = csv
    else:
        try:
            write_manifest(rows, data)
        except Exception as err:  # refused at write time is fine if it is one clear error
            from sonofm.errors import UserError

            assert isinstance(err, UserError | ValueError), err
            return
        target = data
    code, out = cli("pretrain", "--data", target, "--out", tmp_path / "run", "--epochs", "1",
                    "--batch-size", "8", f"model={model_yaml}", *TRAIN)
    _no_traceback(code, out)
    if code == 2:
        assert_one_line_error(code, out)


def test_serve_survives_hostile_uploads_and_leaks_no_name(tmp_path, caplog):
    pytest.importorskip("fastapi")
    from starlette.testclient import TestClient

    from sonofm.models import build_model, save_model
    from sonofm.serve.app import create_app
    from sonofm.serve.settings import ServeSettings
    from tests.tiny_models import TINY_DUAL_ENCODER

    model = save_model(build_model(TINY_DUAL_ENCODER).eval(), tmp_path / "model")
    store = tmp_path / "kept"
    secret = "DOE_JANE_MRN1234567"
    settings = ServeSettings(model=str(model), store_uploads=store)
    with caplog.at_level(logging.INFO), TestClient(create_app(settings)) as c:
        for name, data in {**hostile_images(), **hostile_dicoms()}.items():
            r = c.post("/api/analyze", files={"file": (f"{secret}_{name}", data, "application/octet-stream")})
            assert 400 <= r.status_code < 500, (name, r.status_code, r.text)
            assert r.json()["detail"] and secret not in r.text, (name, r.text)
        # a client's request id never names a file, and a repeated one never overwrites an upload
        for rid in ("..", "../../etc/x", "ok-id", "ok-id"):
            r = c.post("/api/analyze", files={"file": (f"{secret}.png", good_png(), "image/png")},
                       headers={"X-Request-ID": rid})
            assert r.status_code == 200, r.text
            got = r.json()["request_id"]
            assert (got == rid) == (rid == "ok-id") and ".." not in got
        assert c.get("/health").status_code == 200
    assert len(list(store.glob("*.png"))) == 4 and len(list(store.glob("*.json"))) == 4
    assert secret not in caplog.text
    assert not any(secret in p.name for p in store.iterdir())
