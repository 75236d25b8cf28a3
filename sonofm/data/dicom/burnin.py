"""Burned-in text in ultrasound pixels: detection and masking.

Scanners burn patient names, IDs, dates and institution names into the pixels, and the
BurnedInAnnotation tag is often missing or wrong, so the pixels themselves are checked. No
installed library does this offline (OCR engines are not available), so it is written here:
text is thin, bright, high-contrast strokes on a dark background. A white top-hat isolates
strokes narrower than the structuring element; strokes are grouped into words by a horizontal
dilation, and word-shaped groups (text-line height, enough strokes, not a solid blob) are
returned as boxes. Everything outside the scan region is masked anyway (see `mask_outside`),
so these boxes matter for text drawn inside the scan area.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class TextParams:
    tophat_size: int = 9  # strokes thinner than this (px) stand out in the top-hat
    tophat_min: int = 80  # stroke contrast over the local background
    value_min: int = 170  # text is drawn bright (white, yellow, green UI colours)
    min_height: int = 6
    max_height: int = 40
    min_pixels: int = 12
    max_fill: float = 0.8  # a solid blob (bright reflector) is not text
    # UI text is drawn in one flat colour: at least this share of its stroke pixels has the most
    # common value. Bright speckle varies pixel to pixel (measured <= 0.3 on the pydicom echo),
    # rendered text stays >= 0.5 even after JPEG.
    min_flat: float = 0.5


def text_candidates(value: np.ndarray, params: TextParams = TextParams()) -> np.ndarray:
    """Boolean map of stroke pixels: bright and thin (white top-hat)."""
    v = value.astype(np.int16)
    opened = ndimage.grey_opening(v, size=(params.tophat_size, params.tophat_size))
    return ((v - opened) > params.tophat_min) & (v >= params.value_min)


def detect_text(
    value: np.ndarray, params: TextParams = TextParams(), ignore: np.ndarray | None = None
) -> list[tuple[int, int, int, int]]:
    """Boxes (x0, y0, x1, y1 exclusive) of text-like groups of strokes in an (H, W) uint8 image.

    `ignore` marks pixels that cannot be text (e.g. colour-Doppler flow inside the scan).
    """
    cand = text_candidates(value, params)
    if ignore is not None:
        cand &= ~ignore
    words = ndimage.binary_dilation(cand, structure=np.ones((3, 7), bool))
    lab, n = ndimage.label(words)
    boxes = []
    for i, sl in enumerate(ndimage.find_objects(lab), start=1):
        if sl is None:
            continue
        ys, xs = sl
        hgt, wid = ys.stop - ys.start, xs.stop - xs.start
        strokes = cand[sl] & (lab[sl] == i)
        npx = int(strokes.sum())
        if not (params.min_height <= hgt <= params.max_height) or npx < params.min_pixels:
            continue
        if npx / float(hgt * wid) > params.max_fill:
            continue
        _, counts = np.unique(value[sl][strokes], return_counts=True)
        if counts.max() / npx < params.min_flat:
            continue
        boxes.append((xs.start, ys.start, xs.stop, ys.stop))
    return boxes


def boxes_mask(shape: tuple[int, int], boxes: list[tuple[int, int, int, int]], pad: int = 2) -> np.ndarray:
    """Boolean (H, W) map covering every box grown by `pad` pixels."""
    h, w = shape
    m = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in boxes:
        m[max(0, y0 - pad) : min(h, y1 + pad), max(0, x0 - pad) : min(w, x1 + pad)] = True
    return m


def burnin_mask(
    value: np.ndarray,
    scan_mask: np.ndarray | None,
    params: TextParams = TextParams(),
    ignore: np.ndarray | None = None,
) -> np.ndarray:
    """Pixels to blank: everything outside the scan region plus detected text boxes inside it."""
    text = boxes_mask(value.shape, detect_text(value, params, ignore))
    if scan_mask is None:
        return text
    return text | ~scan_mask


def apply_mask(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Copy of `image` ((H, W) or (H, W, 3)) with masked pixels set to 0 (black, like the UI)."""
    out = image.copy()
    out[mask] = 0
    return out
