"""Shared fixtures: a small simulator-free dataset, a tiny model config, an in-process CLI."""

from __future__ import annotations

import traceback
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from sonofm.errors import UserError
from tests.tiny_models import TINY_DUAL_ENCODER

TRAIN = ["train.warmup_steps=1", "train.workers=0", "train.progress=false", "train.log_every=1"]


def write_blob_dataset(out: Path, n: int = 24) -> Path:
    """n 48x48 images of a drawn blob with a one-line report, 1 in 4 in val (no simulator)."""
    from PIL import Image

    from sonofm.data.manifest import write_manifest

    (out / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :48]
    rows = []
    for i in range(n):
        img = rng.normal(90, 20, (48, 48))
        img[(yy - 24) ** 2 + (xx - 12 - i % 3 * 12) ** 2 < 64] = 60 + i % 4 * 60
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(out / f"images/i{i:03d}.png")
        rows.append({"id": f"i{i:03d}", "patient_id": f"p{i}", "split": "val" if i % 4 == 0 else "train",
                     "image": f"images/i{i:03d}.png", "report": f"A nodule of grade {i % 4} at {i % 3}."})
    write_manifest(rows, out)
    return out


@pytest.fixture(scope="session")
def blob_data(tmp_path_factory) -> Path:
    return write_blob_dataset(tmp_path_factory.mktemp("blob") / "data")


@pytest.fixture(scope="session")
def model_yaml(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_DUAL_ENCODER))
    return path


def cli(*args: str) -> tuple[int, str]:
    """(exit code, output) as `sonofm` would give them: a UserError is one 'error:' line, exit 2;
    any other exception is a traceback (which the tests treat as a failure)."""
    from sonofm.cli import app

    res = CliRunner().invoke(app, [str(a) for a in args])
    if isinstance(res.exception, UserError):
        return 2, f"error: {res.exception}"
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        return 1, "".join(traceback.format_exception(res.exception))
    return res.exit_code, res.output


def assert_one_line_error(code: int, out: str, *words: str) -> None:
    assert code == 2, out
    assert "Traceback" not in out and out.count("\n") == 0, out
    for w in words:
        assert w in out, (w, out)
