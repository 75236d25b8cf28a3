"""`sonofm ingest dicom`: a folder of scanner DICOM -> a de-identified sonofm dataset directory.

Per file: read (skip with a reason when it is empty, corrupt, truncated, not an image SOP class,
not ultrasound, in an undecodable transfer syntax, or colour Doppler without --keep-doppler),
select frames, crop to the scan region, mask burned-in text, de-identify the header (PS3.15
Basic Profile, keyed pseudonyms, per-patient date shift) and write PNGs plus a de-identified
DICOM. Each finished file leaves a marker under ``<out>/.ingest/`` holding its manifest rows,
audit entries and skip reason, so a killed job resumes where it stopped; the manifest, card,
audit log and ingest report are rebuilt from the markers at the end. Source files are only read.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder
from pydicom.uid import UID, ExplicitVRLittleEndian

from sonofm.atomic import atomic_write, atomic_write_text
from sonofm.data.card import build_card, write_card
from sonofm.data.dicom.burnin import apply_mask, burnin_mask
from sonofm.data.dicom.deid import (
    Deidentifier,
    key_fingerprint,
    load_or_create_key,
    read_key,
    scrub_identifiers,
    source_id,
)
from sonofm.data.dicom.read import CHROMA_THRESHOLD, DicomImage, chroma, is_image_sop, read_dicom
from sonofm.data.dicom.reports import load_reports, report_fields
from sonofm.data.manifest import read_manifest, write_manifest
from sonofm.data.pngio import write_png
from sonofm.errors import UserError
from sonofm.outdir import fingerprint, open_output, read_record
from sonofm.records import pick

log = logging.getLogger(__name__)

MARKER_DIR = ".ingest"
MARKER_VERSION = 1
SPLIT_FRACTIONS = (0.8, 0.1)  # train, val; the rest is test


class Skip(Exception):
    """A file that is not ingested; `reason` is one of the counted reason codes."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass
class IngestReport:
    out: Path
    files: int = 0
    ingested_files: int = 0
    images: int = 0
    resumed: int = 0
    new_images: int = 0  # images from this run's source files (resumed ones included)
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_files: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return pick(
            self,
            *("files", "ingested_files", "images", "new_images", "resumed", "skipped", "skipped_files"),
            sources="keyed hashes of relative paths; map them back with `sonofm ingest locate`",
        )

    def reasons(self) -> str:
        """One line: why files were skipped (for the error of an ingest that ingested nothing)."""
        return ", ".join(f"{k}={v}" for k, v in self.skipped.items()) or "no files found"


def parse_frames(spec: str | int) -> str | int:
    """`all`, `ed-es` or a positive number of evenly spaced frames."""
    if isinstance(spec, int):
        if spec < 1:
            raise UserError(f"--frames must be all, ed-es or a positive integer, got {spec}")
        return spec
    s = str(spec).strip().lower()
    if s in ("all", "ed-es"):
        return s
    if s.isdigit() and int(s) > 0:
        return int(s)
    raise UserError(f"--frames must be all, ed-es or a positive integer, got {spec!r}")


def select_frames(img: DicomImage, spec: str | int) -> list[tuple[int, str | None]]:
    """(frame index, frame label) pairs to export.

    ed-es without ECG triggers: end-diastole is the frame with the most dark (blood-pool) pixels in
    the scan region, end-systole the one with the fewest, a standard image-based surrogate.
    """
    n = img.frames.shape[0]
    if n == 1:
        return [(0, None)]
    if spec == "all":
        return [(i, None) for i in range(n)]
    if spec == "ed-es":
        mask = img.scan_mask if img.scan_mask is not None else np.ones(img.frames.shape[1:], bool)
        dark = np.array([(f[mask] < 30).sum() for f in img.frames])
        ed, es = int(dark.argmax()), int(dark.argmin())
        return [(ed, "ED"), (es, "ES")] if ed != es else [(ed, "ED")]
    k = min(int(spec), n)
    return [(int(i), None) for i in np.unique(np.linspace(0, n - 1, k).round().astype(int))]


def assign_split(key: bytes, patient: str) -> str:
    """Deterministic per-patient split from the keyed hash (no patient spans two splits)."""
    u = int.from_bytes(hmac.new(key, f"split:{patient}".encode(), hashlib.sha256).digest()[:8], "big") / 2**64
    if u < SPLIT_FRACTIONS[0]:
        return "train"
    return "val" if u < sum(SPLIT_FRACTIONS) else "test"


def _read_header(path: Path) -> Any:
    if path.stat().st_size == 0:
        raise Skip("empty_file", "zero-length file")
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError as err:
        raise Skip("not_dicom", str(err)) from None
    except Exception as err:  # truncated headers raise EOFError/ValueError/struct.error
        raise Skip("corrupt", f"{type(err).__name__}: {err}") from None
    if not is_image_sop(ds):
        sop = str(ds.get("SOPClassUID", "?"))
        if is_image_sop(ds, require_pixels=False):
            raise Skip("corrupt", f"image SOP class {sop} but no complete Pixel Data (truncated file?)")
        raise Skip("non_image_sop", f"SOP class {sop} carries no ultrasound image")
    modality = str(ds.get("Modality", "") or "")
    if modality not in ("US", "OT", ""):
        raise Skip("not_ultrasound", f"Modality {modality}")
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is not None:
        try:
            get_decoder(UID(ts))
        except Exception as err:
            raise Skip("unsupported_transfer_syntax", f"{ts}: {err}") from None
    return ds


def _write_deid_dicom(ds: Any, frames: np.ndarray, path: Path) -> None:
    """Store the masked pixels uncompressed (native little endian) with the de-identified header."""
    photometric = "RGB" if frames.ndim == 4 else "MONOCHROME2"
    arr = frames[0] if frames.shape[0] == 1 else frames
    for kw in (
        "RedPaletteColorLookupTableDescriptor",
        "GreenPaletteColorLookupTableDescriptor",
        "BluePaletteColorLookupTableDescriptor",
        "RedPaletteColorLookupTableData",
        "GreenPaletteColorLookupTableData",
        "BluePaletteColorLookupTableData",
        "SegmentedRedPaletteColorLookupTableData",
        "SegmentedGreenPaletteColorLookupTableData",
        "SegmentedBluePaletteColorLookupTableData",
        "PaletteColorLookupTableUID",
    ):
        if kw in ds:
            delattr(ds, kw)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian  # also turns big-endian files native
    ds.set_pixel_data(arr, photometric, 8, generate_instance_uid=False)
    if frames.shape[0] > 1:
        ds.NumberOfFrames = frames.shape[0]
    ds.BurnedInAnnotation = "NO"  # the UI outside the scan and detected text are blanked
    if not isinstance(getattr(ds, "file_meta", None), FileMetaDataset):
        ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.preamble = b"\0" * 128

    def write(tmp: Path) -> None:
        # force_encoding: big-endian sources are rewritten as explicit VR little endian
        pydicom.dcmwrite(tmp, ds, implicit_vr=False, little_endian=True, force_encoding=True)

    atomic_write(path, write)


def ingest_file(
    path: Path,
    out: Path,
    deid: Deidentifier,
    *,
    frames: str | int = "all",
    keep_doppler: bool = False,
    reports: Any = None,
    source_name: str = "",
) -> dict[str, Any]:
    """Ingest one file; returns the marker payload (rows, audit, or skip reason). Raises Skip."""
    ds = _read_header(path)
    report_text = reports.lookup(ds) if reports is not None else None
    if report_text:  # the header's own names and IDs never reach the dataset through the report
        report_text = scrub_identifiers(report_text, ds)
    try:
        img = read_dicom(ds)
    except UserError as err:
        raise Skip("decode_error", str(err)) from None
    if img.doppler and not keep_doppler:
        raise Skip("doppler", f"colour Doppler content in {img.doppler_fraction:.1%} of the scan area")
    colour = img.doppler and img.rgb is not None
    pixels = img.rgb if colour else img.frames
    value0 = img.rgb[0].max(axis=-1) if img.rgb is not None else img.frames[0]
    ignore = None
    if img.doppler and img.rgb is not None:  # flow colour is not text
        ignore = chroma(img.rgb[0]) > CHROMA_THRESHOLD
    mask = burnin_mask(value0, img.scan_mask, ignore=ignore)
    masked = np.stack([apply_mask(f, mask) for f in pixels])
    x0, y0, x1, y1 = img.scan_box or (0, 0, masked.shape[2], masked.shape[1])

    patient = deid.patient_key(ds)
    entries = deid.deidentify(ds, source=source_id(deid.key, source_name))
    pseudo = deid.pseudonym(patient)
    study_id = "S" + hashlib.sha256(str(ds.get("StudyInstanceUID", "")).encode()).hexdigest()[:16]
    # the (keyed) source path is part of the id: copies of one instance (re-exports) stay distinct,
    # and without the key nobody can test a guessed file name against it
    sop_tag = hmac.new(
        deid.key, f"row:{source_name}|{ds.get('SOPInstanceUID', '')}".encode(), hashlib.sha256
    ).hexdigest()[:12]
    split = assign_split(deid.key, patient)
    extra = report_fields(report_text) if report_text else {}

    rows = []
    for idx, label in select_frames(img, frames):
        rid = f"{pseudo}_{sop_tag}_f{idx:03d}"
        rel = f"images/{rid}.png"
        write_png(out / rel, np.ascontiguousarray(masked[idx, y0:y1, x0:x1]))
        row = {
            "id": rid,
            "patient_id": pseudo,
            "study_id": study_id,
            "split": split,
            "image": rel,
            "frame": label,
            "pixel_spacing_mm": img.pixel_spacing_mm,
            "source": "dicom",
            "imaging": {
                "photometric": img.photometric,
                "frame_index": idx,
                "num_frames": int(img.frames.shape[0]),
                "doppler": bool(img.doppler),
                "scan_box": [x0, y0, x1, y1],
                "frame_time_ms": img.frame_time_ms,
                "manufacturer": str(ds.get("Manufacturer", "") or "") or None,
            },
            **extra,
        }
        rows.append(row)
    rel_dcm = f"dicom/{pseudo}/{sop_tag}.dcm"
    _write_deid_dicom(ds, masked, out / rel_dcm)
    for r in rows:
        r["imaging"]["dicom"] = rel_dcm
    return {"rows": rows, "audit": entries}


def _marker_path(out: Path, key: bytes, src_tag: str, rel: str, path: Path) -> Path:
    """Marker of one source file; a file replaced since (size or mtime changed) is re-ingested."""
    st = path.stat()
    name = hmac.new(key, f"marker:{src_tag}|{rel}|{st.st_size}|{st.st_mtime_ns}".encode(), hashlib.sha256)
    return out / MARKER_DIR / (name.hexdigest()[:24] + ".json")


def _scrub(text: str, path: Path, rel: str) -> str:
    """A decoder's message without the file's name or path (names often hold patient names)."""
    for s in sorted({str(path), str(path.resolve()), rel, path.name, path.stem}, key=len, reverse=True):
        if s:
            text = text.replace(s, "<file>")
    return text


def _load_markers(out: Path) -> list[dict[str, Any]]:
    """Every marker of the dataset (all earlier runs and appends); the newest per source wins."""
    newest: dict[str, dict[str, Any]] = {}
    for p in sorted((out / MARKER_DIR).glob("*.json")):
        try:
            m = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            log.warning("%s: unreadable marker, ignored", p)
            continue
        if not isinstance(m, dict) or m.get("version") != MARKER_VERSION:
            continue
        k = str(m.get("origin", p.name))
        if k not in newest or m.get("seq", 0) >= newest[k].get("seq", 0):
            newest[k] = m
    return sorted(newest.values(), key=lambda m: (m.get("seq", 0), m.get("source_index", 0)))


def ingest_dicom(
    src: str | Path,
    out: str | Path,
    *,
    reports: str | Path | None = None,
    frames: str | int = "all",
    keep_doppler: bool = False,
    key_file: str | Path | None = None,
    new_key: bool = False,
    append: bool = False,
    overwrite: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
) -> IngestReport:
    """Ingest every file under `src` (a folder or one file) into the dataset directory `out`.

    Re-running the same ingest resumes; `append` adds another source to an existing dataset
    (same key required); `overwrite` replaces it; anything else on an existing folder is refused.
    Every option is checked before the first byte is written.
    """
    src, out = Path(src), Path(out)
    if not src.exists():
        raise UserError(f"{src}: source folder not found")
    spec = parse_frames(frames)
    index = load_reports(reports) if reports is not None else None
    if key_file is not None and not new_key:
        key: bytes | None = read_key(key_file)
    elif key_file is None and new_key:
        raise UserError("--new-key needs --key-file PATH: where to write the new key")
    elif new_key and Path(key_file).exists():
        raise UserError(f"--new-key: {key_file} exists already; drop --new-key to reuse it, or name another")
    elif key_file is None and (out / ".sonofm-deid.key").is_file():
        key = read_key(out / ".sonofm-deid.key")
    else:
        key = None  # created below, once every check has passed
    files = sorted(p for p in src.rglob("*") if p.is_file()) if src.is_dir() else [src]
    files = [p for p in files if not p.name.startswith(".")]
    # What makes two runs "the same ingest": key, source folder and options (hashed: the folder
    # name may itself be a patient's name).
    src_abs = str(src.resolve())
    params = {"frames": str(spec), "keep_doppler": keep_doppler, "reports": reports is not None}
    kfp = key_fingerprint(key) if key is not None else None
    src_tag = hmac.new(key, f"src:{src_abs}".encode(), hashlib.sha256).hexdigest()[:16] if key else "new"
    prev = read_record(out) if out.is_dir() else None
    known_fp = prev.get("key_fingerprint") if prev and prev.get("job") == "ingest dicom" else None
    if known_fp not in (None, kfp) and kfp is not None and not overwrite:
        raise UserError(
            f"--key-file: this key (fingerprint {kfp}) is not the one {out} was made with "
            f"(fingerprint {known_fp}); use that key, or choose a new --out"
        )
    claim = open_output(
        out,
        job="ingest dicom",
        settings={"key": kfp, "src": src_tag, **params},
        append=append,
        overwrite=overwrite,
        options="--append to add these files to it (same key)",
        accumulate=True,
    )
    if claim.continues and prev is None:
        raise UserError(
            f"--out {out}: holds an ingest without a key fingerprint (made by an older sonofm); "
            "pass --overwrite to redo it, or choose a new --out"
        )
    if claim.mode == "overwrite" and key_file is None:
        key = None  # the old folder's own key goes with it
    if key is None:  # a new key: made once every check has passed (the default one lives in out)
        claim.commit()
        key = load_or_create_key(key_file, out, new_key=new_key)
        kfp = key_fingerprint(key)
        src_tag = hmac.new(key, f"src:{src_abs}".encode(), hashlib.sha256).hexdigest()[:16]
        claim.fingerprint = fingerprint({"key": kfp, "src": src_tag, **params})
    claim.commit(key_fingerprint=kfp)
    (out / "images").mkdir(exist_ok=True)
    deid = Deidentifier(key)
    report = IngestReport(out=out, files=len(files))
    seq0 = time.time_ns()
    this_run: set[str] = set()
    for i, path in enumerate(files):
        rel = str(path.relative_to(src)) if src.is_dir() else path.name
        sid = source_id(key, rel)
        origin = hmac.new(key, f"origin:{src_tag}|{rel}".encode(), hashlib.sha256).hexdigest()[:24]
        this_run.add(origin)
        mpath = _marker_path(out, key, src_tag, rel, path)
        if mpath.is_file():
            try:
                payload = json.loads(mpath.read_text(encoding="utf-8"))
                if payload.get("version") == MARKER_VERSION:
                    report.resumed += 1
                    if progress:
                        progress(i + 1, len(files), rel)
                    continue
            except (OSError, ValueError):
                log.warning("%s: unreadable marker, re-ingesting source %s", mpath, sid)
        try:
            payload = ingest_file(
                path, out, deid, frames=spec, keep_doppler=keep_doppler, reports=index, source_name=rel
            )
        except Skip as s:
            payload = {"skip": {"reason": s.reason, "detail": _scrub(s.detail, path, rel)}}
        except Exception as err:  # one bad file must never stop the job
            log.warning("unexpected error on source %s (#%d): %s", sid, i, type(err).__name__)
            detail = _scrub(f"{type(err).__name__}: {err}", path, rel)
            payload = {"skip": {"reason": "error", "detail": detail}}
        if "skip" in payload:
            payload["skip"].update(source=sid, source_index=i)
        payload.update(version=MARKER_VERSION, source=sid, source_index=i, origin=origin, seq=seq0 + i)
        atomic_write_text(mpath, json.dumps(payload, sort_keys=True))
        if progress:
            progress(i + 1, len(files), rel)

    rows, audit, reasons, seen = [], [], Counter(), set()
    for m in _load_markers(out):
        mine = m.get("origin") in this_run
        if "skip" in m:
            if mine:
                reasons[m["skip"]["reason"]] += 1
                report.skipped_files.append(m["skip"])
            continue
        fresh = [r for r in m["rows"] if r["id"] not in seen]  # one row per id, first source wins
        seen.update(r["id"] for r in fresh)
        rows.extend(fresh)
        audit.extend(m["audit"])
        if mine:
            report.ingested_files += 1
            report.new_images += len(m["rows"])
    report.skipped = dict(sorted(reasons.items()))
    report.images = len(rows)
    atomic_write_text(out / "deid_audit.jsonl", "".join(json.dumps(a, sort_keys=True) + "\n" for a in audit))
    atomic_write_text(out / "ingest_report.json", json.dumps(report.to_dict(), indent=2) + "\n")
    if rows:
        mpath = write_manifest(rows, out)
        card = build_card(
            read_manifest(mpath),
            created_by={"tool": "sonofm ingest dicom", "parameters": params},
            name=out.name,
            description="De-identified ultrasound DICOM (PS3.15 Basic Profile, burned-in text masked).",
            manifest_file=mpath,
        )
        write_card(card, out)
    if report.new_images == 0:
        log.warning("no image was ingested from this source; see %s", out / "ingest_report.json")
    return report


def locate_sources(src: str | Path, key: bytes) -> list[tuple[str, str]]:
    """(source id, relative path) of every file under `src`: maps outputs back to files, with the key."""
    src = Path(src)
    files = sorted(p for p in src.rglob("*") if p.is_file()) if src.is_dir() else [src]
    rels = [str(p.relative_to(src)) if src.is_dir() else p.name for p in files if not p.name.startswith(".")]
    return [(source_id(key, r), r) for r in rels]
