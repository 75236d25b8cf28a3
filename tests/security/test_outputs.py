"""Existing outputs are never silently destroyed: every job continues its own folder, appends or
replaces only when asked, and otherwise refuses with one line, before writing anything."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from sonofm.outdir import JOB_FILE

from .conftest import TRAIN, assert_one_line_error, cli

REFUSAL = ("--resume", "--overwrite", "new --out")


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` with the hash of its bytes (what must survive a refused job)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- pretrain, end to end
def test_pretrain_refuses_continues_and_checks_checkpoints(blob_data, model_yaml, tmp_path):
    run = tmp_path / "run"
    args = ["pretrain", "--data", blob_data, "--out", run, "--epochs", "1", "--batch-size", "6",
            f"model={model_yaml}", *TRAIN]
    code, out = cli(*args)
    assert code == 0, out
    assert json.loads((run / JOB_FILE).read_text())["job"] == "pretrain"
    before = snapshot(run)
    n_metrics = len((run / "metrics.jsonl").read_text().splitlines())

    # other settings, no option: one line naming the folder and the ways out; nothing touched
    code, out = cli(*args[:-len(TRAIN) - 1], "train.lr=0.5", f"model={model_yaml}", *TRAIN)
    assert_one_line_error(code, out, str(run), *REFUSAL)
    assert snapshot(run) == before

    # the same job again continues the run: metrics are appended to, never truncated
    code, out = cli(*args)
    assert code == 0, out
    assert len((run / "metrics.jsonl").read_text().splitlines()) >= n_metrics

    # --resume with a corrupt checkpoint fails before config.yaml (or anything) is rewritten
    ckpt = run / "checkpoints" / "latest.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    config_before = (run / "config.yaml").read_bytes(), (run / "config.yaml").stat().st_mtime_ns
    code, out = cli("pretrain", "--out", run, "--resume", "latest", "--epochs", "3")
    assert_one_line_error(code, out, "latest.pt")
    assert ((run / "config.yaml").read_bytes(), (run / "config.yaml").stat().st_mtime_ns) == config_before

    # --overwrite replaces the run
    code, out = cli(*args[:-len(TRAIN) - 1], "train.lr=0.01", f"model={model_yaml}", "--overwrite", *TRAIN)
    assert code == 0, out
    assert "lr: 0.01" in (run / "config.yaml").read_text()


# ---------------------------------------------------------------- the other jobs refuse early
def _foreign_run(folder: Path, job: str) -> dict[str, str]:
    """A folder that holds an earlier `job` output made with other settings."""
    folder.mkdir(parents=True)
    (folder / JOB_FILE).write_text(json.dumps({"job": job, "fingerprint": "0" * 24}))
    (folder / "config.yaml").write_text("earlier: run\n")
    (folder / "metrics.jsonl").write_text('{"step": 1}\n')
    return snapshot(folder)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from sonofm.models import build_model, save_model
    from tests.tiny_models import TINY_DUAL_ENCODER

    return save_model(build_model(TINY_DUAL_ENCODER), tmp_path_factory.mktemp("m") / "model")


@pytest.mark.parametrize("job", ["ssl", "finetune", "train-vlm", "eval", "index build", "export onnx"])
def test_every_job_refuses_an_existing_output(job, blob_data, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    before = _foreign_run(out, job)
    argv = {
        "ssl": ["ssl", "--data", blob_data, "--out", out],
        "finetune": ["finetune", "--data", blob_data, "--out", out, "--task", "classify"],
        "train-vlm": ["train-vlm", "--data", blob_data, "--out", out],
        "eval": ["eval", "--model", tiny_model_dir, "--data", blob_data, "--out", out],
        "index build": ["index", "build", "--model", tiny_model_dir, "--data", blob_data, "--out", out],
        "export onnx": ["export", "onnx", "--model", tiny_model_dir, "--out", out],
    }[job]
    code, msg = cli(*argv)
    assert_one_line_error(code, msg, str(out), "--overwrite", "new --out")
    assert snapshot(out) == before
    # a folder sonofm did not write is never deleted, even with --overwrite
    other = tmp_path / "mine"
    other.mkdir()
    (other / "thesis.tex").write_text("years of work")
    code, msg = cli(*[a if a != out else other for a in argv], "--overwrite")
    assert_one_line_error(code, msg, "not written by sonofm")
    assert (other / "thesis.tex").read_text() == "years of work"


def test_invalid_adapter_fails_at_once_without_a_run_folder(blob_data, tmp_path):
    out = tmp_path / "ft"
    code, msg = cli("finetune", "--data", blob_data, "--out", out, "--task", "classify", "--adapter", "bogus")
    assert_one_line_error(code, msg, "bogus", "ht")
    assert not out.exists()


def test_model_weights_honour_umask(tiny_model_dir):
    mode = (Path(tiny_model_dir) / "model.safetensors").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


# ---------------------------------------------------------------- ingest: append, keys, nothing
def _src(tmp_path: Path, name: str, files: tuple[str, ...]) -> Path:
    src = tmp_path / name
    src.mkdir()
    for f in files:
        shutil.copy(get_testdata_file(f), src / f)
    return src


def _rows(out: Path) -> int:
    from sonofm.data.manifest import read_manifest

    return len(read_manifest(out))


def test_ingest_append_keys_and_refusals(tmp_path):
    warnings.simplefilter("ignore")
    a = _src(tmp_path, "a", ("OBXXXX1A.dcm",))
    b = _src(tmp_path, "b", ("gdcm-US-ALOKA-16.dcm",))
    out, key = tmp_path / "ds", tmp_path / "k" / "deid.key"
    common = ["--frames", "1"]

    code, msg = cli("ingest", "dicom", a, "--out", out, "--key-file", key, *common)
    assert_one_line_error(code, msg, "--new-key")
    assert not out.exists()  # no empty OUT/images left behind

    code, msg = cli("ingest", "dicom", a, "--out", out, "--key-file", key, "--new-key", *common)
    assert code == 0, msg
    assert key.stat().st_mode & 0o777 == 0o600
    n_a, before = _rows(out), snapshot(out)

    code, msg = cli("ingest", "dicom", b, "--out", out, "--key-file", key, *common)
    assert_one_line_error(code, msg, str(out), "--append", "--overwrite", "new --out")
    assert snapshot(out) == before

    other = tmp_path / "other.key"
    other.write_text("another-key-of-enough-length-0123")
    code, msg = cli("ingest", "dicom", b, "--out", out, "--key-file", other, "--append", *common)
    assert_one_line_error(code, msg, "fingerprint")
    assert snapshot(out) == before

    code, msg = cli("ingest", "dicom", b, "--out", out, "--key-file", key, "--append", *common)
    assert code == 0, msg
    n_ab = _rows(out)
    assert n_ab > n_a
    audit = (out / "deid_audit.jsonl").read_text().splitlines()

    # re-running either ingest resumes: nothing is lost or duplicated
    code, msg = cli("ingest", "dicom", a, "--out", out, "--key-file", key, *common)
    assert code == 0, msg
    assert _rows(out) == n_ab and (out / "deid_audit.jsonl").read_text().splitlines() == audit
    assert json.loads((out / "ingest_report.json").read_text())["resumed"] == 1

    code, msg = cli("ingest", "dicom", b, "--out", out, "--key-file", key, "--overwrite", *common)
    assert code == 0, msg
    assert 0 < _rows(out) < n_ab


def test_ingest_of_nothing_exits_non_zero_with_reasons(tmp_path):
    src = tmp_path / "junk"
    src.mkdir()
    (src / "a.dcm").write_bytes(b"not dicom at all")
    (src / "b.dcm").write_bytes(b"")
    code, msg = cli("ingest", "dicom", src, "--out", tmp_path / "ds", "--key-file", tmp_path / "k",
                    "--new-key")
    assert_one_line_error(code, msg, "no image was ingested", "not_dicom=1", "empty_file=1")
