"""`sonofm simulate` on the command line: outputs, counts, one-line errors, help with examples."""

from __future__ import annotations

import sys

import pytest

from sonofm import cli
from sonofm.data.manifest import read_manifest


def _main(monkeypatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["sonofm", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    return exc.value.code


def test_simulate_command(tmp_path, monkeypatch, capsys):
    out = tmp_path / "ds"
    args = [
        "simulate",
        "--out",
        str(out),
        "--n",
        "9",
        "--regions",
        "fake_thyroid,fake_heart",
        "--size",
        "48",
        "--seed",
        "4",
        "--splits",
        "0.5,0.25,0.25",
        "--plugin",
        "tests.sim.fake_region",
        "--preview",
    ]
    assert _main(monkeypatch, *args) == 0
    err = capsys.readouterr().err
    assert f"dataset: {out}" in err and "preview.png" in err and "patients" in err
    df = read_manifest(out, check_files=True)
    assert len(df) == 9 and df["id"].str.startswith("sim-4-").all()
    assert (out / "preview.png").is_file() and (out / "dataset.json").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n", "0"], "error: --n must be a positive number of images, got 0"),
        (["--n", "5", "--regions", "nowhere"], "error: unknown region(s) 'nowhere'; valid regions:"),
        (["--n", "5", "--splits", "0.8,x,0.1"], "error: --splits must be three numbers train,val,test"),
    ],
)
def test_simulate_bad_input_is_one_line(tmp_path, monkeypatch, capsys, args, message):
    assert _main(monkeypatch, "simulate", "--out", str(tmp_path / "ds"), *args) == 2
    err = capsys.readouterr().err.strip()
    # One message (rich may soft-wrap it at the terminal width), no traceback.
    assert " ".join(err.split()).startswith(message) and "Traceback" not in err
    assert err.count("error:") == 1


def test_simulate_help_has_examples(monkeypatch, capsys):
    assert _main(monkeypatch, "simulate", "--help") == 0
    text = capsys.readouterr().out
    assert "sonofm simulate --out data/sim --n 2000 --preview" in text
    assert "--burned-in-text" in text and "--doppler-box" in text


def test_long_error_stays_on_one_line_when_piped(tmp_path):
    """stderr piped (not a terminal): a long error message is not wrapped at 80 columns."""
    import subprocess

    regions = ",".join(f"no_such_region_{i}" for i in range(12))  # message far wider than 80 columns
    res = subprocess.run(
        [sys.executable, "-m", "sonofm.cli", "simulate", "--out", str(tmp_path / "ds"), "--n", "5",
         "--regions", regions],
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "COLUMNS": "80"},
    )
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and len(lines[0]) > 120, res.stderr
    assert lines[0].startswith("error: unknown region(s)")
