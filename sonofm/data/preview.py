"""A contact sheet of a dataset directory: one sample per region and per echo view.

Meant for a human glance after ``sonofm simulate --preview`` (or on any dataset dir): the image,
its mask outlined in colour (one colour per ``MASK_LABELS`` id), a title (region/organ, view and
frame) and the first words of the report underneath. Deterministic for a given dataset.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from sonofm.atomic import atomic_write
from sonofm.data.manifest import read_manifest
from sonofm.data.pngio import read_png

log = logging.getLogger(__name__)

# One colour per mask label id (index = label); 0 (background) is never drawn.
LABEL_COLOURS = np.array(
    [
        (0, 0, 0),
        (255, 60, 60),  # lesion
        (60, 200, 255),  # organ
        (255, 220, 0),  # lv
        (255, 120, 0),  # myocardium
        (0, 230, 120),  # la
        (200, 80, 255),  # rv
        (255, 110, 200),  # ra
        (120, 255, 255),  # pericardial_effusion
        (0, 140, 255),  # vessel_lumen
        (255, 255, 160),  # plaque
    ],
    dtype=np.uint8,
)


def select_samples(df: pd.DataFrame) -> pd.DataFrame:
    """One row per non-echo region and one per echo view (first in manifest order), preferring
    rows that have a mask; ordered by region then view."""
    df = df.assign(_has_mask=df["mask"].notna(), _order=np.arange(len(df)))
    df = df.sort_values(["_has_mask", "_order"], ascending=[False, True], kind="stable")
    heart = df["region"] == "heart"
    views = df[heart & df["view"].notna()].drop_duplicates("view")
    others = df[~heart | df["view"].isna()].drop_duplicates("region")
    picked = pd.concat([others, views]).sort_values(["region", "view"], na_position="first", kind="stable")
    return picked.drop(columns=["_has_mask", "_order"])


def outline(mask: np.ndarray) -> np.ndarray:
    """Label of each boundary pixel (a labelled pixel with a 4-neighbour of another label), else 0."""
    m = mask.astype(np.int32)
    edge = np.zeros(m.shape, dtype=bool)
    edge[1:, :] |= m[1:, :] != m[:-1, :]
    edge[:-1, :] |= m[:-1, :] != m[1:, :]
    edge[:, 1:] |= m[:, 1:] != m[:, :-1]
    edge[:, :-1] |= m[:, :-1] != m[:, 1:]
    return np.where(edge & (m > 0), m, 0)


def _wrap(draw, text: str, font, width: int, max_lines: int) -> list[str]:
    words, lines, cur = text.split(), [], ""
    for w in words:
        trial = f"{cur} {w}".strip()
        if draw.textlength(trial, font=font) <= width:
            cur = trial
            continue
        if cur:
            lines.append(cur)
        cur = w
        if len(lines) == max_lines:
            break
    if cur and len(lines) < max_lines:
        lines.append(cur)
    if len(lines) == max_lines and len(" ".join(lines).split()) < len(words):
        last = lines[-1]
        while last and draw.textlength(last + " ...", font=font) > width:
            last = last.rsplit(" ", 1)[0] if " " in last else ""
        lines[-1] = last + " ..."
    return lines


def render_tile(image: np.ndarray, mask: np.ndarray | None, thumb: int) -> np.ndarray:
    """An RGB thumbnail with the mask's label boundaries drawn in LABEL_COLOURS."""
    rgb = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
    tile = np.asarray(Image.fromarray(rgb).resize((thumb, thumb), Image.Resampling.BILINEAR)).copy()
    if mask is not None:
        small = np.asarray(Image.fromarray(mask).resize((thumb, thumb), Image.Resampling.NEAREST))
        edges = outline(small)
        ids = np.clip(edges, 0, len(LABEL_COLOURS) - 1)
        tile[edges > 0] = LABEL_COLOURS[ids[edges > 0]]
    return tile


def contact_sheet(
    dataset: str | Path, out: str | Path, *, thumb: int = 192, columns: int = 6, caption_lines: int = 4
) -> Path:
    """Write a PNG contact sheet of `dataset` (a dataset dir or manifest) to `out`; return `out`."""
    df = read_manifest(dataset)
    root = Path(df.attrs["root"])
    rows = select_samples(df)
    font = ImageFont.load_default()
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = int(scratch.textbbox((0, 0), "Ag", font=font)[3]) + 3
    pad = 6
    cell_w, cell_h = thumb + 2 * pad, thumb + 2 * pad + line_h * (caption_lines + 1)
    ncol = max(1, min(columns, len(rows)))
    nrow = (len(rows) + ncol - 1) // ncol
    sheet = Image.new("RGB", (ncol * cell_w, nrow * cell_h), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for k, row in enumerate(rows.itertuples(index=False)):
        x, y = (k % ncol) * cell_w + pad, (k // ncol) * cell_h + pad
        image = read_png(root / row.image)
        mask = read_png(root / row.mask) if row.mask is not None else None
        sheet.paste(Image.fromarray(render_tile(image, mask, thumb)), (x, y))
        title = "/".join(str(v) for v in (row.region, row.organ, row.view, row.frame) if v is not None)
        ty = y + thumb + 3
        draw.text((x, ty), title, fill=(255, 220, 120), font=font)
        for j, line in enumerate(_wrap(draw, row.report or "", font, thumb, caption_lines)):
            draw.text((x, ty + (j + 1) * line_h), line, fill=(230, 230, 230), font=font)
    out = Path(out)
    atomic_write(out, lambda tmp: sheet.save(tmp, format="PNG", compress_level=6))
    log.info("wrote contact sheet of %d samples to %s", len(rows), out)
    return out
