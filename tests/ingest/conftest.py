"""Shared fixtures: one ingest of every ultrasound test file of pydicom and pydicom-data."""

from __future__ import annotations

import hashlib
import shutil
import warnings
from pathlib import Path

import pytest

from sonofm.data.dicom.read import testdata_ultrasound_files


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def us_files() -> list[Path]:
    files = testdata_ultrasound_files()
    if len(files) < 15:
        pytest.skip("pydicom-data is not installed")
    return files


@pytest.fixture(scope="session")
def ingested(us_files, tmp_path_factory):
    """(src dir, out dir, report, source hashes before) of an ingest with --keep-doppler."""
    from sonofm.data.dicom.ingest import ingest_dicom

    src = tmp_path_factory.mktemp("src")
    for f in us_files:
        shutil.copy(f, src / f.name)
    before = {p.name: sha256(p) for p in src.iterdir()}
    out = tmp_path_factory.mktemp("out") / "ds"
    key = tmp_path_factory.mktemp("key") / "key.txt"
    key.write_text("a-test-key-of-more-than-16-bytes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = ingest_dicom(src, out, frames="ed-es", keep_doppler=True, key_file=key)
    return src, out, report, before
