"""Burned-in text is gone from the exported pixels; the scan itself is kept.

The boxes were marked by hand on the first frame of each file (x0, y0, x1, y1 in the original
pixel grid, end exclusive): "text" boxes hold burned-in institution names, patient IDs, dates
and scanner readouts; "scan" boxes lie inside the tissue image.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from sonofm.data.dicom.burnin import apply_mask, boxes_mask, detect_text
from sonofm.data.dicom.deid import source_id
from sonofm.data.dicom.read import read_dicom
from sonofm.data.pngio import read_png

BOXES = {
    "US1_UNCR.dcm": {  # GE colour Doppler: institution, IDs, date-time, labels
        "text": [(15, 22, 175, 104), (495, 22, 625, 104), (245, 360, 362, 378), (395, 455, 625, 475)],
        "scan": [(100, 150, 300, 290)],
    },
    "OBXXXX1A.dcm": {  # Philips: patient ID "11-05-25-142825", institution, date
        "text": [(92, 33, 268, 55), (322, 33, 515, 55), (665, 4, 778, 27), (0, 64, 80, 260)],
        "scan": [(400, 90, 520, 135)],
    },
    "gdcm-US-ALOKA-16.dcm": {  # institution, date-time, readouts; "127/128 20Hz" inside the scan box
        "text": [(78, 0, 245, 24), (540, 0, 640, 24), (0, 445, 120, 472), (30, 428, 290, 446),
                 (250, 36, 315, 62)],
        "scan": [(60, 200, 300, 400), (360, 200, 600, 400)],
    },
    "JPGLosslessP14SV1_1s_1f_8b.dcm": {  # Philips echo: labels and measurements
        "text": [(10, 22, 145, 49), (80, 62, 340, 118), (820, 22, 990, 48), (925, 728, 998, 750)],
        "scan": [(350, 300, 650, 500)],
    },
    # the SonoSite PLAX cine (color3d_jpeg_baseline.dcm is the same clip at twice the size)
    "examples_ybr_color.dcm": {"text": [(9, 2, 30, 12), (2, 12, 38, 30)], "scan": [(130, 75, 200, 150)]},
}


def _exported_full(out, row, shape):
    """The exported PNG put back into the original pixel grid (0 where cropped away)."""
    png = read_png(out / row["image"])
    x0, y0, x1, y1 = row["imaging"]["scan_box"]
    full = np.zeros(shape + png.shape[2:], np.uint8)
    full[y0:y1, x0:x1] = png
    return full


@pytest.mark.parametrize("name", sorted(BOXES))
def test_burned_in_text_masked_scan_kept(ingested, us_files, name):
    _, out, _, _ = ingested
    markers = [json.loads(p.read_text()) for p in (out / ".ingest").glob("*.json")]
    sid = source_id(b"a-test-key-of-more-than-16-bytes", name)  # outputs name sources by keyed hash
    row = next(m for m in markers if m["source"] == sid)["rows"][0]
    path = next(p for p in us_files if p.name == name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img = read_dicom(path)
    k = row["imaging"]["frame_index"]
    value = img.rgb[k].max(axis=-1) if img.rgb is not None else img.frames[k]
    full = _exported_full(out, row, value.shape)
    orig = img.frames[k] if full.ndim == 2 else img.rgb[k]
    for x0, y0, x1, y1 in BOXES[name]["text"]:
        text = value[y0:y1, x0:x1] >= 60
        assert text.sum() > 10, f"{name}: hand-marked box {(x0, y0, x1, y1)} holds no text"
        leaked = (full[y0:y1, x0:x1].reshape(y1 - y0, x1 - x0, -1).max(-1)[text] > 0).mean()
        assert leaked == 0.0, f"{name}: {leaked:.1%} of the text in {(x0, y0, x1, y1)} survived"
    for x0, y0, x1, y1 in BOXES[name]["scan"]:
        kept = np.mean(np.all((full[y0:y1, x0:x1] == orig[y0:y1, x0:x1]).reshape(y1 - y0, x1 - x0, -1), -1))
        assert kept > 0.97, f"{name}: only {kept:.1%} of the scan in {(x0, y0, x1, y1)} kept"


def test_detect_text_on_synthetic_string():
    """Rendered text on speckle-free black is found; a smooth bright blob is not text."""
    from PIL import Image, ImageDraw, ImageFont

    im = Image.new("L", (200, 80))
    draw = ImageDraw.Draw(im)
    draw.fontmode = "1"  # scanners draw aliased, flat-colour text
    draw.text((20, 8), "DOE^JANE 1962", fill=255, font=ImageFont.load_default(size=16))
    arr = np.asarray(im).copy()
    yy, xx = np.mgrid[0:80, 0:200]
    arr[((xx - 150) ** 2 + (yy - 55) ** 2) < 15**2] = 220  # a round reflector, 30 px wide
    boxes = detect_text(arr)
    assert boxes and all(b[1] < 30 for b in boxes)
    masked = apply_mask(arr, boxes_mask(arr.shape, boxes))
    assert masked[5:30].max() == 0 and masked[55, 150] == 220
