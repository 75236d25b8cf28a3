"""`sonofm ingest ...` on the command line: outputs, frame selection and one-line errors."""

from __future__ import annotations

import shutil
import sys

import pytest
from typer.testing import CliRunner

from sonofm import cli
from sonofm.cli import app
from sonofm.data.manifest import load_dataset


def test_ingest_dicom_cli_frames(tmp_path, us_files):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(next(p for p in us_files if p.name == "examples_ybr_color.dcm"), src)
    key = tmp_path / "k"
    key.write_text("x" * 32)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["ingest", "dicom", str(src), "--out", str(out), "--frames", "3",
                                   "--key-file", str(key)])
    assert res.exit_code == 0, res.output
    df = load_dataset(out).manifest
    assert sorted(r["frame_index"] for r in df["imaging"]) == [0, 14, 29]  # evenly spaced over 30
    assert (out / "deid_audit.jsonl").stat().st_size > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["dicom", "{tmp}/nope", "--out", "{tmp}/o"], "source folder not found"),
        (["dicom", "{tmp}", "--out", "{tmp}/o", "--frames", "x"], "--frames must be"),
        (["busi", "{tmp}", "--out", "{tmp}/o"], "not a BUSI folder"),
    ],
)
def test_ingest_cli_errors_are_one_line(tmp_path, monkeypatch, capsys, args, message):
    argv = ["sonofm", "ingest", *(a.replace("{tmp}", str(tmp_path)) for a in args)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exc:
        cli.main()
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and err.startswith("error:") and message in err
    assert "Traceback" not in err
