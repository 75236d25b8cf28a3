"""Stage 1 of the analysis: an upload's bytes -> a de-identified 8-bit grayscale image.

Sniffs the bytes (PNG, JPEG or DICOM; anything else is a 415), decodes through the shared image
pipeline (:mod:`sonofm.data.transforms`); DICOM is de-identified in memory and cropped to the scan
area as `sonofm ingest dicom` does. See :mod:`sonofm.serve.analyze` for the stages.
"""

from __future__ import annotations

import base64
import io
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from sonofm.data.decode import MAX_PIXELS as DECODE_MAX_PIXELS
from sonofm.data.decode import ImageDecodeError
from sonofm.data.dicom.deid import Deidentifier
from sonofm.data.pngio import encode_png
from sonofm.data.transforms import model_input, read_gray
from sonofm.errors import DataError

log = logging.getLogger(__name__)


MAX_PIXELS = DECODE_MAX_PIXELS  # one pixel limit for the toolkit (decompression-bomb guard)
PREVIEW_SIZE = 384  # longest side of the preview/overlay PNGs in responses


class UploadError(Exception):
    """A request-level problem with the upload; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ---------------------------------------------------------------- stage 1: decode
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
)
_OTHER_MAGIC = (  # recognised only to name them in the 415 message
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"%PDF", "PDF"),
    (b"PK\x03\x04", "ZIP"),
    (b"\x1a\x45\xdf\xa3", "WebM/Matroska video"),
)


@dataclass
class DecodedUpload:
    """An upload turned into what the model sees, plus non-identifying facts about it."""

    kind: str  # "png" | "jpeg" | "dicom"
    image: np.ndarray  # uint8 (H, W) grayscale; for DICOM de-identified (UI and burned-in text blanked)
    filename: str
    info: dict[str, Any] = field(default_factory=dict)
    dicom: Any = None  # the de-identified pydicom Dataset (header only is trustworthy) for store_uploads


def sniff_kind(data: bytes, filename: str = "", content_type: str = "") -> str:
    """'png' | 'jpeg' | 'dicom' from the bytes; UploadError 415 for anything else."""
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    ct = (content_type or "").split(";")[0].strip().lower()
    if filename.lower().endswith((".dcm", ".dicom")) or ct == "application/dicom":
        return "dicom"  # DICOM without the 128-byte preamble (allowed by PS3.10 readers with force)
    other = next((name for magic, name in _OTHER_MAGIC if data.startswith(magic)), None)
    what = f"a {other} file" if other else f"bytes starting {data[:8]!r}"
    raise UploadError(
        415,
        f"unsupported file {filename or '(unnamed)'!r} (content-type {ct or 'none'!r}, {what}): "
        "expected a PNG, JPEG or DICOM image",
    )


def _decode_raster(data: bytes, kind: str, filename: str) -> np.ndarray:
    """PNG/JPEG bytes -> uint8 (H, W) through the shared decoder (one pixel limit, one failure)."""
    try:
        return read_gray(data, name=repr(filename), max_pixels=MAX_PIXELS)
    except ImageDecodeError as e:
        raise UploadError(422, f"corrupt {kind.upper()} image: {e}") from None


def _decode_dicom(data: bytes, filename: str, deid: Any) -> DecodedUpload:
    import pydicom  # lazy: pydicom and scipy (~0.4 s) are only for DICOM uploads
    from pydicom.errors import InvalidDicomError  # lazy: pydicom is only for DICOM uploads

    from sonofm.data.dicom.burnin import apply_mask, burnin_mask  # lazy: scipy, only for DICOM uploads
    from sonofm.data.dicom.read import CHROMA_THRESHOLD, chroma, read_dicom  # lazy: pydicom, only for DICOM

    has_preamble = len(data) >= 132 and data[128:132] == b"DICM"
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=not has_preamble)
    except InvalidDicomError as e:
        raise UploadError(422, f"{filename!r}: not a valid DICOM file ({e})") from None
    except Exception as e:  # truncated headers raise EOFError / ValueError / struct.error
        raise UploadError(422, f"{filename!r}: corrupt DICOM header ({type(e).__name__}: {e})") from None
    if "PixelData" not in ds:
        sop = str(ds.get("SOPClassUID", "") or "unknown SOP class")
        raise UploadError(
            422, f"{filename!r}: DICOM file has no Pixel Data ({sop}); expected an ultrasound image"
        )
    try:
        img = read_dicom(ds)
    except DataError as e:
        raise UploadError(422, f"{filename!r}: corrupt DICOM pixel data ({e})") from None
    except Exception as e:  # pragma: no cover - read_dicom wraps decoder errors in DataError
        raise UploadError(422, f"{filename!r}: cannot decode DICOM ({type(e).__name__}: {e})") from None
    value0 = img.rgb[0].max(axis=-1) if img.rgb is not None else img.frames[0]
    ignore = chroma(img.rgb[0]) > CHROMA_THRESHOLD if (img.doppler and img.rgb is not None) else None
    mask = burnin_mask(value0, img.scan_mask, ignore=ignore)
    frame = apply_mask(img.frames[0], mask)
    x0, y0, x1, y1 = img.scan_box or (0, 0, frame.shape[1], frame.shape[0])
    frame = np.ascontiguousarray(frame[y0:y1, x0:x1])
    modality = str(ds.get("Modality", "") or "")
    deid.deidentify(ds, source="upload")  # in memory only; nothing identifying is kept or logged
    info = {
        "frames": int(img.frames.shape[0]),
        "frame_used": 0,
        "modality": modality or None,
        "doppler": bool(img.doppler),
        "pixel_spacing_mm": img.pixel_spacing_mm,
        "masked_fraction": round(float(mask.mean()), 4),
        "scan_box": [int(x0), int(y0), int(x1), int(y1)],
        "deidentified": True,
    }
    return DecodedUpload("dicom", frame, filename, info, dicom=ds)


def decode_upload(data: bytes, filename: str, content_type: str, *, deid: Any) -> DecodedUpload:
    """Bytes of an upload -> `DecodedUpload`; UploadError (400/415/422) naming the problem."""
    if not data:
        raise UploadError(400, f"uploaded file {filename or '(unnamed)'!r} is empty (0 bytes)")
    kind = sniff_kind(data, filename, content_type)
    if kind == "dicom":
        out = _decode_dicom(data, filename, deid)
    else:
        out = DecodedUpload(kind, _decode_raster(data, kind, filename), filename)
    out.info.update(kind=kind, height=int(out.image.shape[0]), width=int(out.image.shape[1]), bytes=len(data))
    return out


def new_deidentifier() -> Any:
    """A de-identifier with a random per-process key: pseudonyms cannot be linked across restarts."""
    return Deidentifier(secrets.token_bytes(32))


def to_model_input(image: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (H, W) -> float (1, S, S) in [0, 1] by the shared pipeline (`sonofm.data.transforms`)."""
    return model_input(image, size)


def _fit(image: np.ndarray, longest: int = PREVIEW_SIZE) -> np.ndarray:
    h, w = image.shape[:2]
    s = min(1.0, longest / max(h, w))
    if s >= 1.0:
        return image
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def png_data_uri(image: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(encode_png(image)).decode("ascii")
