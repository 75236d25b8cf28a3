"""`simulate_dataset` with fake regions: exact N, patient splits, determinism, resume, refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sonofm.data.card import read_card
from sonofm.data.manifest import COLUMN_NAMES, read_manifest
from sonofm.data.pngio import read_png
from sonofm.errors import UserError
from sonofm.sim import generator
from sonofm.sim.generator import patient_split, simulate_dataset
from tests.sim.hashes import dataset_hashes

PLUGIN = "tests.sim.fake_region"
FAKES = ("fake_thyroid", "fake_heart")


def _sim(out: Path, n: int = 23, **kw) -> Path:
    kw.setdefault("regions", FAKES)
    kw.setdefault("size", 40)
    kw.setdefault("plugins", (PLUGIN,))
    kw.setdefault("progress", False)
    return simulate_dataset(out, n, **kw)


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    return _sim(tmp_path_factory.mktemp("ref") / "ds")


def test_exact_n_every_field_and_files(reference):
    df = read_manifest(reference, check_files=True)
    assert len(df) == 23
    assert list(df.columns) == list(COLUMN_NAMES)
    for col in (
        "id",
        "patient_id",
        "study_id",
        "split",
        "image",
        "mask",
        "region",
        "organ",
        "report",
        "attributes",
        "diagnosis",
        "measurements",
        "landmarks",
        "pixel_spacing_mm",
        "source",
        "sex",
        "imaging",
        "structured",
    ):
        assert df[col].notna().all(), col
    assert df["id"].iloc[0] == "sim-0-p000000-00" and df["source"].eq("sim").all()
    # Patients in index order, regions round-robin, the last one truncated to fit exactly.
    pids = list(dict.fromkeys(df["patient_id"]))
    assert pids == [f"sim-0-p{i:06d}" for i in range(len(pids))]
    assert set(df.loc[df["patient_id"] == pids[0], "region"]) == {"thyroid"}
    assert set(df.loc[df["patient_id"] == pids[1], "region"]) == {"heart"}
    last = json.loads((reference / "records" / f"p{len(pids) - 1:06d}.json").read_text())
    kept = df[df["patient_id"] == pids[-1]]
    assert 1 <= len(kept) <= len(last["rows"])
    assert sorted(p.name for p in (reference / "records").glob("p*.json")) == [
        f"p{i:06d}.json" for i in range(len(pids))
    ]
    assert len(list((reference / "images").iterdir())) == 23
    heart = df[df["region"] == "heart"]
    assert set(heart["view"]) == {"A4C", "PLAX"} and set(heart["frame"]) == {"ED", "ES"}
    assert heart["malignant"].isna().all() and df.loc[df["region"] == "thyroid", "bbox"].map(len).eq(1).all()
    row = df.iloc[0]
    assert row["attributes"]["diagnosis"] == ["nodule"] and row["structured"]["region"] == "thyroid"
    assert row["imaging"]["realism"] == {"burned_in_text": False, "doppler_box": False}
    assert row["report"]  # written by sonofm.reports from the ground truth
    img, mask = read_png(reference / row["image"]), read_png(reference / row["mask"])
    assert img.shape == (40, 40) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1, 2}
    card = read_card(reference)
    assert card["num_images"] == 23 and card["created_by"]["tool"] == "sonofm simulate"
    assert card["created_by"]["parameters"]["regions"] == list(FAKES)
    counts = df["region"].value_counts().sort_index()
    assert card["counts"]["region"] == {k: int(v) for k, v in counts.items()}
    assert "--n 23" in card["created_by"]["command"] and "--seed 0" in card["created_by"]["command"]


def test_patient_splits_disjoint_and_match_fractions(tmp_path):
    out = _sim(tmp_path / "ds", n=500, regions=("fake_thyroid",), size=32, splits=(0.7, 0.2, 0.1))
    df = read_manifest(out)
    per_patient = df.groupby("patient_id")["split"].agg(set)
    assert per_patient.map(len).eq(1).all()  # every patient in exactly one split
    frac = per_patient.map(lambda s: next(iter(s))).value_counts(normalize=True)
    for split, want in (("train", 0.7), ("val", 0.2), ("test", 0.1)):
        assert abs(frac[split] - want) < 0.04, (split, frac[split])


def test_split_blocks_are_exact():
    got = [patient_split(7, i, (0.8, 0.1, 0.1)) for i in range(40)]
    for b in (0, 20):
        block = got[b : b + 20]
        assert (block.count("train"), block.count("val"), block.count("test")) == (16, 2, 2)
    assert got == [patient_split(7, i, (0.8, 0.1, 0.1)) for i in range(40)]
    assert got != [patient_split(8, i, (0.8, 0.1, 0.1)) for i in range(40)]


def test_byte_identical_for_workers_and_reruns(reference, tmp_path):
    want = dataset_hashes(reference)
    assert dataset_hashes(_sim(tmp_path / "w2", workers=2)) == want
    assert dataset_hashes(_sim(tmp_path / "again")) == want
    assert dataset_hashes(_sim(tmp_path / "seed1", seed=1)) != want


def test_rerun_of_finished_dataset_touches_nothing(tmp_path):
    out = _sim(tmp_path / "ds", n=8)
    before = _mtimes(out)
    _sim(out, n=8)
    after = _mtimes(out)
    assert {k: v for k, v in after.items() if not k.startswith("logs")} == {
        k: v for k, v in before.items() if not k.startswith("logs")
    }


def test_resume_after_kill(reference, tmp_path, monkeypatch):
    out = tmp_path / "ds"
    real = generator.simulate_one_patient
    calls = {"n": 0}

    def killed_midway(out_dir, params, index):
        if calls["n"] == 4:  # the 5th patient dies after writing one image and a temp file
            (Path(out_dir) / "images" / f"sim-0-p{index:06d}-00.png").write_bytes(b"partial")
            (Path(out_dir) / "images" / ".sim-0-p000004-01.png.tmp-999").write_bytes(b"junk")
            raise KeyboardInterrupt
        calls["n"] += 1
        return real(out_dir, params, index)

    monkeypatch.setattr(generator, "simulate_one_patient", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        _sim(out)
    assert not (out / "manifest.parquet").exists()
    finished = {k: v for k, v in _mtimes(out).items() if k.startswith(("images/sim-0-p00000", "masks/"))}
    finished = {k: v for k, v in finished.items() if "p000004" not in k}
    assert len(finished) > 4
    monkeypatch.setattr(generator, "simulate_one_patient", real)
    _sim(out)
    assert dataset_hashes(out) == dataset_hashes(reference)  # same bytes as an uninterrupted run
    now = _mtimes(out)
    assert {k: now[k] for k in finished} == finished  # finished patients left alone


def test_resume_after_sigkill_of_a_parallel_run(reference, tmp_path):
    out = tmp_path / "ds"
    code = (
        "from sonofm.sim.generator import simulate_dataset; "
        f"simulate_dataset({str(out)!r}, 23, regions={FAKES!r}, size=40, workers=2, progress=False, "
        f"plugins=({PLUGIN!r},))"
    )
    env = {**os.environ, "SONOFM_TEST_SLOW_PATIENT_S": "0.4"}
    cwd = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=cwd, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while len(list((out / "records").glob("p*.json"))) < 3 and time.monotonic() < deadline:
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its worker processes, as a crash would
        proc.wait()
    finished = sorted(int(p.stem[1:]) for p in (out / "records").glob("p*.json"))
    assert 3 <= len(finished) < 9 and not (out / "manifest.parquet").exists()
    before = _mtimes(out)
    _sim(out)
    got, want = dataset_hashes(out), dataset_hashes(reference)
    assert [k for k in got.keys() | want.keys() if got.get(k) != want.get(k)] == []
    now = _mtimes(out)
    for i in finished:
        for k in (k for k in before if f"p{i:06d}" in k and k in now):
            assert now[k] == before[k], k  # finished patients were left alone


def test_resume_repairs_deleted_records_and_images(reference, tmp_path):
    import shutil

    out = tmp_path / "ds"
    shutil.copytree(reference, out)
    (out / "records" / "p000002.json").unlink()
    victim = sorted((out / "images").glob("sim-0-p000005-*.png"))[0]
    victim.unlink()
    (out / "manifest.parquet").unlink()
    before = _mtimes(out)
    _sim(out)
    assert dataset_hashes(out) == dataset_hashes(reference)
    now = _mtimes(out)
    untouched = [k for k in before if k.startswith("images/") and "p000002" not in k and "p000005" not in k]
    assert untouched and all(now[k] == before[k] for k in untouched)


def test_refusals(tmp_path, reference):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="is not empty and is not a dataset made by `sonofm simulate`"):
        _sim(foreign)
    with pytest.raises(UserError, match=r"different parameters: n=23 \(now 24\); size=40 \(now 48\)"):
        _sim(reference, n=24, size=48)
    with pytest.raises(UserError, match=r"unknown region\(s\) 'brain'; valid regions: .*fake_heart, fake"):
        _sim(tmp_path / "x", regions=("fake_thyroid", "brain"))
    for n in (0, -3):
        with pytest.raises(UserError, match="--n must be a positive number of images"):
            _sim(tmp_path / "x", n=n)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match="cannot write to --out"):
        _sim(tmp_path / "afile" / "sub")
    with pytest.raises(UserError, match="exists and is not a directory"):
        _sim(tmp_path / "afile")
    with pytest.raises(UserError, match="--splits must sum to 1"):
        _sim(tmp_path / "x", splits=(0.8, 0.3, 0.1))
    with pytest.raises(UserError, match="unknown realism knob"):
        _sim(tmp_path / "x", realism=["sparkles"])
    with pytest.raises(UserError, match="cannot import simulator plugin module 'no_such_mod'"):
        _sim(tmp_path / "x", plugins=("no_such_mod",))
    assert not (tmp_path / "x").exists()  # argument errors are caught before anything is written


def test_realism_knobs_and_preview(tmp_path):
    knobs = {"burned_in_text": True, "doppler_box": True}
    out = _sim(tmp_path / "ds", n=10, realism=knobs, size=96, preview=True)
    df = read_manifest(out)
    for row in df.itertuples():
        img = read_png(out / row.image)
        assert img.shape == (96, 96, 3)  # the Doppler box makes frames RGB
        realism = row.imaging["realism"]
        assert realism["burned_in_text"] and realism["doppler_box"]
        assert realism["text"]["boxes"] and realism["doppler"]["box"]
        assert realism["doppler"]["target"] == (3 if row.region == "heart" else 1)  # LV pool / lesion
    card = read_card(out)
    assert card["created_by"]["command"].endswith("--burned-in-text --doppler-box")
    sheet = read_png(out / "preview.png")
    assert sheet.ndim == 3 and sheet.shape[0] > 96 and sheet.shape[1] > 3 * 96  # thyroid + 2 echo views
