"""`sonofm report parse` / `sonofm report sample`."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from sonofm.cli import app

runner = CliRunner()


def test_report_help_lists_commands():
    r = runner.invoke(app, ["report", "--help"])
    assert r.exit_code == 0 and "parse" in r.output and "sample" in r.output


def test_parse_file_and_stdin(tmp_path):
    f = tmp_path / "r.txt"
    f.write_text(
        "Findings: Hypoechoic nodule 1.2 x 0.8 cm, no shadowing. No nephrocalcinosis.\n", encoding="utf-8"
    )
    r = runner.invoke(app, ["report", "parse", str(f), "--region", "thyroid"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["study"]["measurements"] == {"lesion_width_mm": 12.0, "lesion_height_mm": 8.0}
    assert {"dimension": "posterior", "tag": "shadowing", "status": "absent", "grade": None} in data["study"][
        "findings"
    ]
    assert "nephrocalcinosis" in data["unknown_terms"]
    r = runner.invoke(app, ["report", "parse", "-"], input="LVEF 35%.")
    assert json.loads(r.stdout)["study"]["measurements"] == {"lvef_pct": 35.0}


def test_sample_is_seeded():
    a = runner.invoke(app, ["report", "sample", "--region", "thyroid", "--n", "3", "--seed", "0"])
    b = runner.invoke(app, ["report", "sample", "--region", "thyroid", "--n", "3", "--seed", "0"])
    assert a.exit_code == 0 and a.stdout == b.stdout
    lines = [json.loads(x) for x in a.stdout.splitlines()]
    assert len(lines) == 3 and all(
        x["study"]["organ"] == "thyroid" and "Findings:" in x["report"] for x in lines
    )


def test_user_errors():
    from sonofm.errors import UserError

    r = runner.invoke(app, ["report", "parse", "/nonexistent/report.txt"])
    assert isinstance(r.exception, UserError) and "does not exist" in str(r.exception)
    r = runner.invoke(app, ["report", "sample", "--region", "elbow"])
    assert isinstance(r.exception, UserError) and "thyroid" in str(r.exception)
