"""Echocardiography sets: CAMUS (NIfTI, needs nibabel) and EchoNet-Dynamic (AVI, needs PyAV).

CAMUS layout: ``<root>/database_nifti/patientNNNN/patientNNNN_{2CH,4CH}_{ED,ES}.nii.gz`` with
``..._gt.nii.gz`` label maps (1 LV cavity, 2 myocardium, 3 left atrium) and ``Info_{2CH,4CH}.cfg``
(``ED``, ``ES``, ``Sex``, ``LVef``...). EchoNet-Dynamic layout: ``FileList.csv`` (FileName, EF,
EDV, ESV, Split), ``VolumeTracings.csv`` (FileName, X1, Y1, X2, Y2, Frame: LV traced on two
frames, the larger area being end-diastole) and ``Videos/<FileName>.avi``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from sonofm.data.importers._common import (
    ImportResult,
    Skips,
    finish_dataset,
    image_row,
    require_dir,
    safe_id,
    split_of,
)
from sonofm.errors import DataError, UserError

CAMUS_LABELS = {1: 3, 2: 4, 3: 5}  # CAMUS gt -> MASK_LABELS (lv, myocardium, la)
CAMUS_VIEWS = {"2CH": "A2C", "4CH": "A4C"}
# the manifest fields every echo frame shares
HEART = {
    "region": "heart",
    "organ": "heart",
    "attributes": {"organ": ["heart"], "body_system": ["cardiovascular"]},
}


def _require(module: str, package: str, what: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(
            f"{what} needs the '{package}' package, which is not installed "
            f"(install it with: pip install {package})"
        ) from None


def _to_uint8(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    top = a.max() if a.size else 0
    return (a if top <= 255 else a / top * 255).clip(0, 255).astype(np.uint8)


def read_camus_cfg(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            out[k.strip()] = v.strip()
    return out


def import_camus(src: str | Path, out: str | Path) -> ImportResult:
    """Import CAMUS ED/ES frames of the 2- and 4-chamber views with their label maps."""
    nib = _require("nibabel", "nibabel", "CAMUS import (NIfTI files)")
    root = require_dir(src, "CAMUS")
    base = root / "database_nifti" if (root / "database_nifti").is_dir() else root
    out = Path(out)
    rows, skips = [], Skips()
    for pdir in sorted(p for p in base.iterdir() if p.is_dir() and p.name.startswith("patient")):
        pid = pdir.name
        for ch, view in CAMUS_VIEWS.items():
            cfg_path = pdir / f"Info_{ch}.cfg"
            cfg = read_camus_cfg(cfg_path) if cfg_path.is_file() else {}
            for frame in ("ED", "ES"):
                img_p, gt_p = pdir / f"{pid}_{ch}_{frame}.nii.gz", pdir / f"{pid}_{ch}_{frame}_gt.nii.gz"
                if not img_p.is_file():
                    continue
                rid = safe_id(f"camus_{pid}_{view}_{frame}")
                try:
                    img = _to_uint8(np.asarray(nib.load(str(img_p)).get_fdata()).squeeze().T)
                    lab = None
                    if gt_p.is_file():
                        gt = np.asarray(nib.load(str(gt_p)).get_fdata()).squeeze().T.astype(np.int64)
                        lab = np.zeros(gt.shape, np.uint8)
                        for k, v in CAMUS_LABELS.items():
                            lab[gt == k] = v
                except Exception as err:  # nibabel raises several types for broken files
                    skips.add(img_p.relative_to(root), "unreadable", f"{type(err).__name__}: {err}")
                    continue
                meas = {}
                if cfg.get("LVef"):
                    meas["lvef_pct"] = float(cfg["LVef"])
                sex = cfg.get("Sex") if cfg.get("Sex") in ("F", "M") else None
                row = image_row(out, rid, img, lab, split=split_of(pid), patient_id=pid, study_id=pid)
                row |= {"view": view, "frame": frame, "sex": sex, "measurements": meas, "source": "camus"}
                rows.append(HEART | row)
    return finish_dataset(
        rows,
        out,
        skips,
        tool="sonofm ingest camus",
        name="camus",
        description="CAMUS 2D echocardiography (A2C/A4C, ED/ES) with LV/myocardium/LA masks.",
    )


def tracing_mask(rows: list[tuple[float, float, float, float]], shape: tuple[int, int]) -> np.ndarray:
    """LV label map (3) from EchoNet VolumeTracings rows of one frame.

    The first row is the long axis; the others are chords whose (X1, Y1) ends trace one wall and
    (X2, Y2) the other, so the outline is the X1 side followed by the X2 side reversed.
    """
    pts = np.asarray(rows, dtype=np.float64)
    if len(pts) < 3:
        raise DataError("an EchoNet tracing needs at least 3 rows")
    chords = pts[1:]
    poly = [(x, y) for x, y in chords[:, :2]] + [(x, y) for x, y in chords[::-1, 2:]]
    im = Image.new("L", (shape[1], shape[0]))
    ImageDraw.Draw(im).polygon(poly, fill=3)
    return np.asarray(im).copy()


def _read_avi_frames(path: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    av = _require("av", "av", "EchoNet-Dynamic import (AVI videos)")
    frames = {}
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                frames[i] = frame.to_ndarray(format="gray")
            if len(frames) == len(wanted):
                break
    return frames


def import_echonet(src: str | Path, out: str | Path) -> ImportResult:
    """Import EchoNet-Dynamic: the traced ED and ES frames with LV masks, EF/EDV/ESV measurements."""
    root = require_dir(src, "EchoNet-Dynamic")
    for f in ("FileList.csv", "VolumeTracings.csv"):
        if not (root / f).is_file():
            raise UserError(f"{root}: missing {f} (not an EchoNet-Dynamic folder)")
    _require("av", "av", "EchoNet-Dynamic import (AVI videos)")
    files = pd.read_csv(root / "FileList.csv")
    tracings = pd.read_csv(root / "VolumeTracings.csv")
    out = Path(out)
    rows, skips = [], Skips()
    split_map = {"TRAIN": "train", "VAL": "val", "TEST": "test"}
    for rec in files.to_dict("records"):
        name = str(rec["FileName"])
        stem = Path(name).stem
        video = root / "Videos" / (stem + ".avi")
        tr = tracings[tracings["FileName"].astype(str).str.replace(".avi", "", regex=False) == stem]
        if not video.is_file() or tr.empty:
            skips.add(name, "missing_video" if not video.is_file() else "missing_tracing", "")
            continue
        traced = {int(f): g[["X1", "Y1", "X2", "Y2"]].to_numpy() for f, g in tr.groupby("Frame")}
        try:
            frames = _read_avi_frames(video, set(traced))
            masks = {f: tracing_mask([tuple(r) for r in traced[f]], frames[f].shape) for f in frames}
        except (DataError, KeyError) as err:
            skips.add(name, "unreadable", str(err))
            continue
        order = sorted(masks, key=lambda f: -(masks[f] > 0).sum())  # larger LV = end-diastole
        for f, label in zip(order, ("ED", "ES"), strict=False):
            rid = safe_id(f"echonet_{stem}_{label}")
            meas = {
                k: float(rec[c])
                for k, c in (("lvef_pct", "EF"), ("lv_edv_ml", "EDV"), ("lv_esv_ml", "ESV"))
                if c in rec and pd.notna(rec[c])
            }
            split = split_map.get(str(rec.get("Split", "")).upper(), "train")
            row = image_row(out, rid, frames[f], masks[f], split=split, patient_id=stem, study_id=stem)
            rows.append(
                row | HEART | {"view": "A4C", "frame": label, "measurements": meas, "source": "echonet"}
            )
    return finish_dataset(
        rows,
        out,
        skips,
        tool="sonofm ingest echonet",
        name="echonet",
        description="EchoNet-Dynamic apical-4-chamber ED/ES frames with LV tracings.",
    )
