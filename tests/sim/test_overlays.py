"""Realism knobs change pixels only where they say they did."""

from __future__ import annotations

import numpy as np
import pytest

from sonofm.sim.overlays import BOX_COLOUR, FONT, burn_in_text, doppler_box, draw_text, text_size


def _outside(shape, boxes) -> np.ndarray:
    keep = np.ones(shape[:2], bool)
    for x0, y0, x1, y1 in boxes:
        keep[y0:y1, x0:x1] = False
    return keep


def test_draw_text_renders_the_glyphs():
    img = np.zeros((20, 40), np.uint8)
    box = draw_text(img, "L1", 2, 3, value=200)
    assert box == [2, 3, 2 + text_size("L1")[0], 3 + 7]
    np.testing.assert_array_equal(img[3:10, 2:7] == 200, FONT["L"])
    np.testing.assert_array_equal(img[3:10, 8:13] == 200, FONT["1"])
    assert img[:, 7].max() == 0  # one blank column between glyphs
    assert draw_text(img, "X", 100, 100) is None  # entirely off-image: nothing drawn
    with pytest.raises(ValueError, match="no glyph for '@'"):
        draw_text(img, "a@b", 0, 0)


def test_burned_in_text_changes_only_its_boxes():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 200, (160, 160)).astype(np.uint8)
    imaging = {"probe": "linear", "depth_mm": 38, "gain_db": 2}
    out, info = burn_in_text(img, np.random.default_rng(1), imaging)
    assert info["boxes"] and len(info["boxes"]) == len(info["lines"])
    assert len(info["identifying"]) == len(info["lines"])
    ids = [line for line, flag in zip(info["lines"], info["identifying"], strict=True) if flag]
    assert any(line.startswith("ID ") for line in ids) and any("^" in line for line in ids)  # ID, name
    assert any("38 MM" in line and "GAIN 52" in line for line in info["lines"])
    changed = out != img
    assert changed.any()
    assert not changed[_outside(img.shape, info["boxes"])].any()
    assert set(np.unique(out[changed])) == {255}
    again, info2 = burn_in_text(img, np.random.default_rng(1), imaging)
    assert info2 == info and np.array_equal(again, out)  # deterministic from the rng


def _scene(size=96):
    img = np.full((size, size), 90, np.uint8)
    mask = np.zeros((size, size), np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    mask[(xx - 48) ** 2 + (yy - 50) ** 2 <= 15**2] = 1
    return img, mask, np.ones((size, size), bool)


@pytest.mark.parametrize("vasc", ["minimal", "peripheral", "internal", "hypervascular"])
def test_doppler_box_flow_only_inside_lesion(vasc):
    img, mask, fan = _scene()
    rgb, info = doppler_box(img, mask, fan, np.random.default_rng(3), vascularity=vasc)
    assert rgb.shape == (96, 96, 3) and rgb.dtype == np.uint8 and info["target"] == 1
    x0, y0, x1, y1 = info["box"]
    box = np.zeros(img.shape, bool)
    box[y0 : y1 + 1, x0 : x1 + 1] = True
    gray = (rgb == img[..., None]).all(axis=2)
    assert gray[~box].all()  # nothing changes outside the box
    colour = ~gray & box
    colour[y0, :] = colour[y1, :] = colour[:, x0] = colour[:, x1] = False  # the outline
    assert info["flow_pixels"] == colour.sum() > 0
    assert (mask[colour] == 1).all()  # flow only inside the lesion
    assert (rgb[y0, x0 : x1 + 1] == BOX_COLOUR).all()
    rows, cols = np.nonzero(mask == 1)
    assert x0 < cols.min() and x1 > cols.max() and y0 < rows.min() and y1 > rows.max()


def test_doppler_flow_amount_follows_vascularity():
    img, mask, fan = _scene()
    flow = {
        v: doppler_box(img, mask, fan, np.random.default_rng(5), vascularity=v)[1]["flow_pixels"]
        for v in ("avascular", "minimal", "hypervascular")
    }
    assert flow["avascular"] == 0 < flow["minimal"] < flow["hypervascular"]


def test_doppler_vessel_direction():
    img, _, fan = _scene()
    mask = np.zeros_like(img)
    mask[40:52, 10:86] = 9
    art, _ = doppler_box(img, mask, fan, np.random.default_rng(0), organ="carotid_artery")
    vein, _ = doppler_box(img, mask, fan, np.random.default_rng(0), organ="jugular_vein")
    lumen = mask == 9
    art_flow, vein_flow = (~(x == img[..., None]).all(axis=2) & lumen for x in (art, vein))
    assert art_flow.sum() > 0.7 * lumen.sum() and vein_flow.sum() > 0.7 * lumen.sum()
    assert (art[art_flow][:, 0] > art[art_flow][:, 2]).all()  # arteries red
    assert (vein[vein_flow][:, 2] > vein[vein_flow][:, 0]).all()  # veins blue
