"""A generated corpus of hostile inputs: broken DICOM, decompression bombs, broken images, bad
manifests and reports. Every item is small on disk and built in milliseconds."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid


def png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def bomb_png(side: int = 30000) -> bytes:
    """A side x side 1-bit PNG of zeros: ~110 kB on disk, side**2 pixels (900 M) once decoded."""
    comp = zlib.compressobj(9)
    row = b"\0" * (1 + (side + 7) // 8)
    data = b"".join(comp.compress(row * 1000) for _ in range(side // 1000)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    chunks = png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def good_png(seed: int = 0, size: int = 40) -> bytes:
    from PIL import Image

    arr = np.random.default_rng(seed).integers(0, 255, (size, size), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def hostile_images() -> dict[str, bytes]:
    """name -> bytes of image files that must each be skipped and reported, never crash a job."""
    png = good_png()
    return {
        "bomb.png": bomb_png(),
        "truncated.png": png[: len(png) // 2],
        "garbage.png": np.random.default_rng(1).bytes(2048),
        "empty.png": b"",
        "text.png": b"this is a note, not an image\n",
        "jpeg_header_only.png": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\0" * 32,
        "bad_crc.png": png[:40] + bytes([png[40] ^ 0xFF]) + png[41:],
        "zero_size.png": b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 0, 8, 0, 0, 0, 0)),
    }


def _non_image(sop_class: str, modality: str) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = sop_class, meta.MediaStorageSOPInstanceUID, modality
    ds.PatientName, ds.PatientID = "Hostile^Corpus", "HC-1"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def hostile_dicoms() -> dict[str, bytes]:
    """name -> bytes of files an ingest must skip with a reason (plus nothing else)."""
    real = Path(get_testdata_file("OBXXXX1A.dcm")).read_bytes()
    ds = pydicom.dcmread(get_testdata_file("OBXXXX1A.dcm"))
    ds.Rows, ds.Columns = 60000, 60000  # claims 3.6 G pixels, holds a few hundred k
    huge = io.BytesIO()
    ds.save_as(huge)
    return {
        "empty.dcm": b"",
        "garbage.dcm": np.random.default_rng(2).bytes(4096),
        "text.dcm": b"Patient notes, not DICOM\n",
        "truncated_header.dcm": real[:300],
        "truncated_pixels.dcm": real[: len(real) // 2],
        "dicm_only.dcm": b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00",
        "structured_report.dcm": _non_image("1.2.840.10008.5.1.4.1.1.88.11", "SR"),
        "claims_huge_frame.dcm": huge.getvalue(),
        "bomb.png": bomb_png(),
    }
