"""Realism knobs: things real scanner frames carry that a clean simulation does not.

* Burned-in scanner text (probe/depth/gain labels, a patient-ID-like string, a name, a date)
  drawn into the pixels, so de-identification code has something to find and remove.
* A colour-Doppler box: the frame becomes RGB, with a box outline and red/blue flow pixels
  inside the lesion or vessel according to its vascularity tag.

Both are off by default and return, besides the new pixels, exactly where they drew, so tests can
check a de-identifier or a Doppler detector against ground truth. numpy/scipy only: the font is a
5x7 bitmap defined below as data (PIL is not allowed in `sonofm.sim`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

# 5x7 bitmap glyphs ("#" = ink), upper case; lower case is drawn as upper case.
_GLYPH_ROWS: dict[str, tuple[str, ...]] = {
    "0": (" ### ", "#   #", "#  ##", "# # #", "##  #", "#   #", " ### "),
    "1": ("  #  ", " ##  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "),
    "2": (" ### ", "#   #", "    #", "   # ", "  #  ", " #   ", "#####"),
    "3": ("#####", "   # ", "  #  ", "   # ", "    #", "#   #", " ### "),
    "4": ("   # ", "  ## ", " # # ", "#  # ", "#####", "   # ", "   # "),
    "5": ("#####", "#    ", "#### ", "    #", "    #", "#   #", " ### "),
    "6": ("  ## ", " #   ", "#    ", "#### ", "#   #", "#   #", " ### "),
    "7": ("#####", "    #", "   # ", "  #  ", " #   ", " #   ", " #   "),
    "8": (" ### ", "#   #", "#   #", " ### ", "#   #", "#   #", " ### "),
    "9": (" ### ", "#   #", "#   #", " ####", "    #", "   # ", " ##  "),
    "A": (" ### ", "#   #", "#   #", "#####", "#   #", "#   #", "#   #"),
    "B": ("#### ", "#   #", "#   #", "#### ", "#   #", "#   #", "#### "),
    "C": (" ### ", "#   #", "#    ", "#    ", "#    ", "#   #", " ### "),
    "D": ("###  ", "#  # ", "#   #", "#   #", "#   #", "#  # ", "###  "),
    "E": ("#####", "#    ", "#    ", "#### ", "#    ", "#    ", "#####"),
    "F": ("#####", "#    ", "#    ", "#### ", "#    ", "#    ", "#    "),
    "G": (" ### ", "#   #", "#    ", "# ###", "#   #", "#   #", " ####"),
    "H": ("#   #", "#   #", "#   #", "#####", "#   #", "#   #", "#   #"),
    "I": (" ### ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "),
    "J": ("  ###", "   # ", "   # ", "   # ", "   # ", "#  # ", " ##  "),
    "K": ("#   #", "#  # ", "# #  ", "##   ", "# #  ", "#  # ", "#   #"),
    "L": ("#    ", "#    ", "#    ", "#    ", "#    ", "#    ", "#####"),
    "M": ("#   #", "## ##", "# # #", "# # #", "#   #", "#   #", "#   #"),
    "N": ("#   #", "#   #", "##  #", "# # #", "#  ##", "#   #", "#   #"),
    "O": (" ### ", "#   #", "#   #", "#   #", "#   #", "#   #", " ### "),
    "P": ("#### ", "#   #", "#   #", "#### ", "#    ", "#    ", "#    "),
    "Q": (" ### ", "#   #", "#   #", "#   #", "# # #", "#  # ", " ## #"),
    "R": ("#### ", "#   #", "#   #", "#### ", "# #  ", "#  # ", "#   #"),
    "S": (" ####", "#    ", "#    ", " ### ", "    #", "    #", "#### "),
    "T": ("#####", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  "),
    "U": ("#   #", "#   #", "#   #", "#   #", "#   #", "#   #", " ### "),
    "V": ("#   #", "#   #", "#   #", "#   #", "#   #", " # # ", "  #  "),
    "W": ("#   #", "#   #", "#   #", "# # #", "# # #", "# # #", " # # "),
    "X": ("#   #", "#   #", " # # ", "  #  ", " # # ", "#   #", "#   #"),
    "Y": ("#   #", "#   #", " # # ", "  #  ", "  #  ", "  #  ", "  #  "),
    "Z": ("#####", "    #", "   # ", "  #  ", " #   ", "#    ", "#####"),
    " ": ("     ",) * 7,
    "-": ("     ", "     ", "     ", "#####", "     ", "     ", "     "),
    "/": ("    #", "    #", "   # ", "  #  ", " #   ", "#    ", "#    "),
    ":": ("     ", " ##  ", " ##  ", "     ", " ##  ", " ##  ", "     "),
    ".": ("     ", "     ", "     ", "     ", "     ", " ##  ", " ##  "),
    ",": ("     ", "     ", "     ", "     ", " ##  ", "  #  ", " #   "),
    "%": ("##   ", "##  #", "   # ", "  #  ", " #   ", "#  ##", "   ##"),
    "#": (" # # ", " # # ", "#####", " # # ", "#####", " # # ", " # # "),
    "^": ("  #  ", " # # ", "#   #", "     ", "     ", "     ", "     "),
    "_": ("     ", "     ", "     ", "     ", "     ", "     ", "#####"),
}
GLYPH_W, GLYPH_H = 5, 7
FONT: dict[str, np.ndarray] = {
    ch: np.array([[c == "#" for c in row] for row in rows], dtype=bool) for ch, rows in _GLYPH_ROWS.items()
}
_PROBE_LABELS = {
    "linear": ("L12-5", "L15-7", "L11-3"),
    "curvilinear": ("C5-1", "C6-2"),
    "phased": ("S5-1", "P4-2"),
}
_SURNAMES = ("SMITH", "GARCIA", "NGUYEN", "MULLER", "ROSSI", "KOWALSKI", "TANAKA", "OKAFOR", "DUBOIS")
_INITIALS = "ABCDEFGHJKLMNPRSTW"
# Flow colour: BGR-free RGB triples for "towards" (red) and "away" (blue) at full velocity.
_RED = np.array([255.0, 40.0, 0.0])
_BLUE = np.array([0.0, 90.0, 255.0])
BOX_COLOUR = (255, 255, 255)


def text_size(text: str, scale: int = 1) -> tuple[int, int]:
    """(width, height) in pixels that `draw_text` uses for `text` (1 pixel spacing between glyphs)."""
    n = len(text)
    return (max(0, n * (GLYPH_W + 1) - 1) * scale, GLYPH_H * scale)


def draw_text(
    image: np.ndarray, text: str, x: int, y: int, *, value: int = 255, scale: int = 1
) -> list[int] | None:
    """Burn `text` into `image` in place with its top-left corner at (x, y); characters that do not
    fit are clipped. Returns the box ``[x0, y0, x1, y1]`` (exclusive ends) of the pixels it may have
    changed, or None when nothing fits.
    """
    h, w = image.shape[:2]
    unknown = sorted({c for c in text.upper() if c not in FONT})
    if unknown:
        supported = "".join(sorted(FONT))
        raise ValueError(f"draw_text: no glyph for {''.join(unknown)!r}; supported: {supported!r}")
    tw, th = text_size(text, scale)
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + tw, w), min(y + th, h)
    if x1 <= x0 or y1 <= y0:
        return None
    ink = np.zeros((th, tw), dtype=bool)
    for i, ch in enumerate(text.upper()):
        glyph = np.kron(FONT[ch], np.ones((scale, scale), dtype=bool))
        cx = i * (GLYPH_W + 1) * scale
        ink[:, cx : cx + GLYPH_W * scale] = glyph
    ink = ink[y0 - y : y1 - y, x0 - x : x1 - x]
    region = image[y0:y1, x0:x1]
    region[ink] = value
    return [int(x0), int(y0), int(x1), int(y1)]


def scanner_text_lines(rng: np.random.Generator, imaging: dict[str, Any]) -> dict[str, list[str]]:
    """Plausible scanner annotations: identifiers for the top banner, UI labels for the bottom.

    Returns ``{"identifiers": [name, id, date time], "labels": [probe/depth/gain, DR/frequency]}``.
    The identifiers are random, i.e. fake, and are what a de-identifier must remove; the labels
    come from the imaging parameters.
    """
    probe = str(imaging.get("probe", "linear"))
    labels = _PROBE_LABELS.get(probe, ("X7-2",))
    label = labels[int(rng.integers(len(labels)))]
    depth = float(imaging.get("depth_mm", 40.0))
    # Scanners show gain on a 0-100 dial; the simulator's gain_db is relative to nominal (0 dB).
    gain = float(np.clip(50.0 + float(imaging.get("gain_db", 0.0)), 0, 100))
    dr = float(imaging.get("dynamic_range_db", 60.0))
    freq = float(imaging.get("center_freq_mhz", 7.5))
    pid = f"ID {int(rng.integers(1000, 10000))}-{int(rng.integers(0, 10000)):04d}"
    name = f"{_SURNAMES[int(rng.integers(len(_SURNAMES)))]}^{_INITIALS[int(rng.integers(len(_INITIALS)))]}"
    year, month, day = int(rng.integers(2015, 2026)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
    hh, mm, ss = int(rng.integers(7, 20)), int(rng.integers(0, 60)), int(rng.integers(0, 60))
    identifiers = [name, pid, f"{year:04d}-{month:02d}-{day:02d} {hh:02d}:{mm:02d}:{ss:02d}"]
    labels_text = [f"{label} / {depth:.0f} MM / GAIN {gain:.0f}", f"DR {dr:.0f} / {freq:.1f} MHZ"]
    return {"identifiers": identifiers, "labels": labels_text}


def burn_in_text(
    image: np.ndarray, rng: np.random.Generator, imaging: dict[str, Any], *, value: int = 255
) -> tuple[np.ndarray, dict[str, Any]]:
    """A copy of `image` with scanner text burned in: identifiers top left, labels bottom left.

    Returns (image, info) where info = ``{"lines": [...], "boxes": [[x0, y0, x1, y1], ...],
    "identifying": [bool, ...]}`` (one entry per drawn line; boxes have exclusive ends; lines that
    identify the patient are flagged). Pixels outside the boxes are unchanged; lines that do not
    fit the image are clipped.
    """
    out = image.copy()
    h, w = out.shape[:2]
    scale = max(1, min(h, w) // 320)
    step = (GLYPH_H + 3) * scale
    margin = 2 * scale
    lines = scanner_text_lines(rng, imaging)
    placed = [(line, margin + k * step, True) for k, line in enumerate(lines["identifiers"])]
    bottom = h - margin - len(lines["labels"]) * step + 3 * scale
    placed += [(line, bottom + k * step, False) for k, line in enumerate(lines["labels"])]
    info: dict[str, list] = {"lines": [], "boxes": [], "identifying": []}
    for line, y, identifying in placed:
        box = draw_text(out, line, margin, y, value=value, scale=scale)
        if box is not None:
            info["lines"].append(line)
            info["boxes"].append(box)
            info["identifying"].append(identifying)
    return out, info


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=sigma, mode="reflect")
    return f / (f.std() + 1e-12)


def _flow_region(
    target: np.ndarray, vascularity: str | None, rng: np.random.Generator, vessel: bool
) -> np.ndarray:
    """Pixels of `target` that carry colour flow, following the vascularity tag."""
    if not target.any():
        return target
    if vessel:  # a patent vessel lumen: flow fills it, except a thin slow-flow rim
        lumen = ndimage.binary_erosion(target, iterations=1)
        return lumen if lumen.any() else target
    tag = vascularity or "avascular"
    if tag == "avascular":
        return np.zeros_like(target)
    size = float(np.sqrt(target.sum()))
    blobs = _smooth_noise(rng, target.shape, sigma=max(1.0, size / 10))
    inner = ndimage.binary_erosion(target, iterations=max(1, int(size / 8)))
    rim = target & ~inner
    if tag == "peripheral":
        return rim & (blobs > -0.3)
    if tag == "minimal":
        return target & (blobs > 1.6)
    if tag == "internal":
        return (inner if inner.any() else target) & (blobs > 0.3)
    return target & (blobs > -0.6)  # hypervascular


def doppler_box(
    image: np.ndarray,
    mask: np.ndarray | None,
    fan_mask: np.ndarray,
    rng: np.random.Generator,
    *,
    vascularity: str | None = None,
    organ: str | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """An RGB copy of grayscale `image` with a colour-Doppler box over the lesion or vessel.

    The box surrounds mask label 1 (lesion) if present, else 9 (vessel lumen), else 3 (LV
    cavity), else 2 (organ), else the middle of the fan; inside it, flow pixels follow
    `vascularity` (lesions) or fill the blood pool (vessels: veins blue, arteries red; LV: mixed
    inflow/outflow). Returns (rgb, info) with info =
    ``{"box": [x0, y0, x1, y1], "target": label, "flow_pixels": n}`` (inclusive box corners; the
    outline is drawn on them); pixels outside the box keep their gray value in all channels.
    """
    if image.ndim != 2:
        raise ValueError(f"doppler_box expects a grayscale (H, W) image, got shape {image.shape}")
    h, w = image.shape
    rgb = np.repeat(image[:, :, None], 3, axis=2)
    target_label = 0
    target = np.zeros((h, w), dtype=bool)
    if mask is not None:
        for label in (1, 9, 3, 2):
            if (mask == label).any():
                target_label, target = label, (mask == label)
                break
    fan_rows, fan_cols = np.nonzero(fan_mask)
    if fan_rows.size == 0:
        return rgb, {"box": None, "target": 0, "flow_pixels": 0}
    if target.any():
        rows, cols = np.nonzero(target)
        r0, r1, c0, c1 = rows.min(), rows.max(), cols.min(), cols.max()
    else:  # no labelled structure: a box in the middle of the fan
        r0, r1 = np.percentile(fan_rows, [30, 70]).astype(int)
        c0, c1 = np.percentile(fan_cols, [30, 70]).astype(int)
    pad_r, pad_c = max(2, int(0.15 * (r1 - r0 + 1))), max(2, int(0.15 * (c1 - c0 + 1)))
    y0 = int(max(r0 - pad_r, fan_rows.min()))
    y1 = int(min(r1 + pad_r, fan_rows.max()))
    x0 = int(max(c0 - pad_c, fan_cols.min()))
    x1 = int(min(c1 + pad_c, fan_cols.max()))
    inside = np.zeros((h, w), dtype=bool)
    inside[y0 + 1 : y1, x0 + 1 : x1] = True
    vessel = target_label in (9, 3)
    if target_label == 2:  # organ parenchyma: sparse normal flow
        flow = _flow_region(target & inside, "minimal", rng, vessel=False)
    elif target_label == 0:
        flow = _flow_region(fan_mask & inside, "minimal", rng, vessel=False)
    else:
        flow = _flow_region(target & inside, vascularity, rng, vessel=vessel)
    flow &= inside & fan_mask
    if target_label == 9:
        direction = np.full((h, w), -1.0 if organ == "jugular_vein" else 1.0)
        dist = ndimage.distance_transform_edt(target)
        speed = np.clip(dist / max(dist.max(), 1.0), 0.25, 1.0)  # parabolic-ish: fastest mid-lumen
    else:
        direction = np.sign(_smooth_noise(rng, (h, w), sigma=3.0))
        speed = np.clip(0.5 + 0.25 * np.abs(_smooth_noise(rng, (h, w), sigma=2.0)), 0.3, 1.0)
    colour = np.where((direction > 0)[..., None], _RED, _BLUE) * speed[..., None]
    rgb[flow] = np.clip(colour[flow], 0, 255).astype(np.uint8)
    # Box outline on the inclusive corners.
    rgb[y0, x0 : x1 + 1] = BOX_COLOUR
    rgb[y1, x0 : x1 + 1] = BOX_COLOUR
    rgb[y0 : y1 + 1, x0] = BOX_COLOUR
    rgb[y0 : y1 + 1, x1] = BOX_COLOUR
    return rgb, {"box": [x0, y0, x1, y1], "target": int(target_label), "flow_pixels": int(flow.sum())}
