"""Contact sheet helpers and PNG I/O used by the dataset format."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from sonofm.data.pngio import encode_png, read_png, write_png
from sonofm.data.preview import LABEL_COLOURS, outline, render_tile, select_samples
from sonofm.errors import DataError


def test_outline_is_the_label_boundary():
    mask = np.zeros((10, 10), np.uint8)
    mask[2:8, 2:8] = 2
    mask[4:6, 4:6] = 1
    edges = outline(mask)
    ring = np.zeros_like(mask, bool)
    ring[2:8, 2:8] = True
    ring[3:7, 3:7] = False
    inner_ring = ndimage.binary_dilation(mask == 1) & (mask == 2)  # 4-neighbours of the lesion
    # label 2 is outlined at the outer border and where it meets the lesion; the lesion is all edge
    np.testing.assert_array_equal(edges == 2, ring | inner_ring)
    np.testing.assert_array_equal(edges == 1, mask == 1)
    tile = render_tile(np.full((10, 10), 50, np.uint8), mask, 10)
    assert (tile[edges == 1] == LABEL_COLOURS[1]).all() and (tile[edges == 0] == 50).all()


def test_select_samples_one_per_region_and_echo_view():
    df = pd.DataFrame(
        {
            "region": ["breast", "breast", "heart", "heart", "heart", "thyroid"],
            "view": [None, None, "A4C", "A4C", "PLAX", "transverse"],
            "mask": [None, "m.png", "a.png", "b.png", "c.png", None],
            "id": list("abcdef"),
        }
    )
    got = select_samples(df)
    assert list(got["id"]) == ["b", "c", "e", "f"]  # breast prefers the row with a mask


def test_png_round_trip_is_exact_and_deterministic(tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (17, 23)).astype(np.uint8)
    rgb = rng.integers(0, 256, (17, 23, 3)).astype(np.uint8)
    for arr in (gray, rgb):
        p = write_png(tmp_path / "x.png", arr)
        np.testing.assert_array_equal(read_png(p), arr)
        assert p.read_bytes() == encode_png(arr)  # no time stamps or other varying chunks
    with pytest.raises(ValueError, match="uint8"):
        encode_png(gray.astype(np.float32))
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(DataError, match="not a readable image"):
        read_png(tmp_path / "bad.png")
    with pytest.raises(DataError, match="image file not found"):
        read_png(tmp_path / "missing.png")
