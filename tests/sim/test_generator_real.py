"""`simulate_dataset` end to end with the real region simulators (tiny N, small images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sonofm.data.manifest import read_manifest
from sonofm.data.pngio import read_png
from sonofm.reports import Study, study_attributes
from sonofm.sim.generator import simulate_dataset
from sonofm.sim.registry import registered_regions
from tests.sim.hashes import dataset_hashes

SIZE = 64
pytestmark = pytest.mark.slow  # real physics for every region: ~10-20 s on 2 busy cores


def _real_regions() -> list[str]:
    """Registered real regions (test fakes may be loaded too), echo last: an echo exam has many
    images, so with at most 6 images per other patient, N = 6 (R - 1) + 1 reaches every region."""
    regions = [r for r in registered_regions() if not r.startswith("fake_")]
    return sorted(regions, key=lambda r: r == "heart")


def _n(regions: list[str]) -> int:
    return 6 * (len(regions) - 1) + 1


@pytest.fixture(scope="module")
def real_dataset(tmp_path_factory) -> tuple[Path, list[str]]:
    regions = _real_regions()
    if not regions:
        pytest.skip("no real region simulators registered yet")
    out = tmp_path_factory.mktemp("real") / "ds"
    simulate_dataset(out, _n(regions), regions=regions, size=SIZE, seed=5, progress=False, preview=True)
    return out, regions


def test_real_regions_make_a_valid_dataset(real_dataset):
    out, regions = real_dataset
    df = read_manifest(out, check_files=True)  # schema, taxonomy ids and files all check out
    assert len(df) == _n(regions)
    assert df["report"].str.len().gt(20).all()
    assert df["patient_id"].nunique() >= len(regions)  # round-robin reaches every region
    for row in df.itertuples():
        img = read_png(out / row.image)
        assert img.shape == (SIZE, SIZE) and img.dtype == np.uint8
        if row.mask is not None:
            assert read_png(out / row.mask).shape == (SIZE, SIZE)
        for x0, y0, x1, y1 in row.bbox:
            assert -1 <= x0 <= x1 <= SIZE + 1 and -1 <= y0 <= y1 <= SIZE + 1
        for x, y in row.landmarks.values():
            assert -1 <= x <= SIZE + 1 and -1 <= y <= SIZE + 1, (row.id, x, y)
        study = Study.from_dict(row.structured)
        assert study_attributes(study) == row.attributes  # attributes come from the ground truth
        assert row.imaging["realism"] == {"burned_in_text": False, "doppler_box": False}
    assert (out / "preview.png").is_file()


def test_real_regions_byte_identical_with_two_workers(real_dataset, tmp_path):
    """A smaller run in 2 processes writes, for every patient it has, the very bytes of the
    1-process reference (a patient depends only on seed and index)."""
    out, regions = real_dataset
    small = simulate_dataset(tmp_path / "w2", 5, regions=regions, size=SIZE, seed=5, workers=2, progress=0)
    got, want = dataset_hashes(small), dataset_hashes(out)
    shared = [k for k in got if k.startswith(("images/", "masks/", "records/p"))]
    assert len(shared) >= 5
    assert [k for k in shared if got[k] != want[k]] == []
