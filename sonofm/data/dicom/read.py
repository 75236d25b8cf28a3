"""Reading ultrasound DICOM: decode every frame, colour -> grayscale, Doppler, spacing, scan region.

Decoding is pydicom's (with pylibjpeg, -openjpeg and -libjpeg plugged in for JPEG Lossless and
JPEG 2000); this module only turns what the scanner stored into what a B-mode model wants:
uint8 frames, a flag for colour-Doppler content, the physical pixel size from the Sequence of
Ultrasound Regions and the scan region (fan or rectangle) so the scanner UI around it can be
cropped and masked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pydicom.data
from pydicom.pixels import apply_color_lut, convert_color_space
from scipy import ndimage

from sonofm.errors import DataError

log = logging.getLogger(__name__)

# PS3.3 C.8.5.5.1.15: PhysicalUnitsXDirection code 3 = cm. RegionSpatialFormat 1 = 2D (tissue).
_UNIT_CM = 3
_SPATIAL_2D = 1
# Chroma (max - min channel) above this counts as coloured; B-mode pixels have R == G == B up to
# compression noise (JPEG YBR 4:2:2 keeps it under ~12 on the pydicom files).
CHROMA_THRESHOLD = 40
# Fraction of coloured pixels inside the scan region above which an image is colour Doppler.
DOPPLER_FRACTION = 0.01
IMAGE_SOP_ROOTS = (
    "1.2.840.10008.5.1.4.1.1.6",  # Ultrasound Image Storage (.6.1; .6 and .6.2 retired)
    "1.2.840.10008.5.1.4.1.1.3",  # Ultrasound Multi-frame Image Storage (.3.1; .3 retired)
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture (scanners export US screenshots this way)
)


@dataclass(frozen=True)
class UltrasoundRegion:
    """One item of SequenceOfUltrasoundRegions, box in pixels (x0, y0, x1, y1 inclusive)."""

    box: tuple[int, int, int, int]
    spatial_format: int
    data_type: int
    spacing_mm: tuple[float, float] | None  # (dx, dy) when both axes are in cm


@dataclass
class DicomImage:
    """Decoded frames plus what ingestion needs to know about them."""

    frames: np.ndarray  # uint8 (N, H, W) grayscale B-mode
    rgb: np.ndarray | None  # uint8 (N, H, W, 3) for RGB/palette files and YBR Doppler, else None
    photometric: str
    doppler: bool
    doppler_fraction: float
    pixel_spacing_mm: float | None
    regions: list[UltrasoundRegion] = field(default_factory=list)
    scan_box: tuple[int, int, int, int] | None = None  # (x0, y0, x1, y1) exclusive end
    scan_mask: np.ndarray | None = None  # bool (H, W)
    frame_time_ms: float | None = None


def is_image_sop(ds: Any, require_pixels: bool = True) -> bool:
    """True for SOP classes that carry an ultrasound picture (not SR, PDF, presentation states)."""
    meta = getattr(ds, "file_meta", None)
    sop = str(ds.get("SOPClassUID", "") or getattr(meta, "MediaStorageSOPClassUID", ""))
    ok = any(sop == root or sop.startswith(root + ".") for root in IMAGE_SOP_ROOTS)
    return ok and ("PixelData" in ds or not require_pixels)


def _scale_to_uint8(arr: np.ndarray, bits: int) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    arr = arr.astype(np.float64)
    if bits > 8:
        top = float(arr.max()) if arr.size else 0.0
        # many 16-bit scanners store 8-bit data in 16-bit words: scale by the used range, not 2**bits
        top = top if 0 < top < 2**bits - 1 else 2**bits - 1
        arr = arr / max(top, 1.0) * 255.0
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def _apply_palette(arr: np.ndarray, ds: Any) -> np.ndarray:
    """Palette lookup honouring the file's byte order.

    pydicom 3.0's `apply_color_lut` reads 16-bit LUT data as little endian even in Explicit VR
    Big Endian files (OBXXXX1A_expb.dcm comes out 256x too dark), so the lookup is done here.
    """
    little = getattr(ds, "original_encoding", (None, True))[1]
    little = True if little is None else little
    desc = ds.RedPaletteColorLookupTableDescriptor
    n = int(desc[0]) or 65536
    first = int(desc[1])
    channels = []
    for colour in ("Red", "Green", "Blue"):
        raw = ds[f"{colour}PaletteColorLookupTableData"].value
        if int(desc[2]) == 8 and len(raw) == n:
            lut = np.frombuffer(raw, np.uint8)
        else:
            lut = np.frombuffer(raw, "<u2" if little else ">u2")[:n]
        channels.append(lut)
    idx = np.clip(arr.astype(np.int64) - first, 0, n - 1)
    return np.stack([c[idx] for c in channels], axis=-1)


def decode_frames(ds: Any) -> np.ndarray:
    """All frames as uint8, shape (N, H, W) for monochrome or (N, H, W, 3) for colour.

    PALETTE COLOR goes through its lookup table (8- or 16-bit entries); YBR is converted to RGB
    by pydicom; MONOCHROME1 is inverted so that bright means echogenic.
    """
    arr = ds.pixel_array
    nframes = int(ds.get("NumberOfFrames", 1) or 1)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    if nframes == 1:
        arr = arr[None]
    pi = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if pi == "PALETTE COLOR":
        lut_bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        if "SegmentedRedPaletteColorLookupTableData" in ds:
            rgb = apply_color_lut(arr, ds)
        else:
            rgb = _apply_palette(arr, ds)
        rgb = (rgb.astype(np.float64) / 257.0) if lut_bits == 16 else rgb
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    if spp == 3:
        return _scale_to_uint8(arr, int(ds.get("BitsStored", 8)))
    out = _scale_to_uint8(arr, int(ds.get("BitsStored", 8)))
    if pi == "MONOCHROME1":
        out = 255 - out
    return out


def to_grayscale(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma (integer arithmetic, rounded); exact on B-mode pixels (R == G == B)."""
    w = np.array([299, 587, 114], np.uint32)
    return ((rgb.astype(np.uint32) @ w + 500) // 1000).astype(np.uint8)


def _decode_ybr(ds: Any) -> np.ndarray | None:
    """(N, H, W, 3) YBR_FULL planes for YBR_FULL(_422) files, else None.

    Skipping pydicom's YBR -> RGB conversion of every frame saves ~3/4 of the decode time of a
    cine: the Y plane already is the BT.601 grayscale.
    """
    pi = str(ds.get("PhotometricInterpretation", ""))
    if pi not in ("YBR_FULL", "YBR_FULL_422") or int(ds.get("SamplesPerPixel", 1) or 1) != 3:
        return None
    ds.pixel_array_options(as_rgb=False)
    arr = ds.pixel_array
    if int(ds.get("NumberOfFrames", 1) or 1) == 1:
        arr = arr[None]
    return arr


def _ybr_to_rgb(ybr: np.ndarray) -> np.ndarray:
    return np.stack([convert_color_space(f, "YBR_FULL", "RGB") for f in ybr])


def chroma(rgb: np.ndarray) -> np.ndarray:
    """max - min channel: 0 on gray, large on Doppler colour and coloured UI."""
    return rgb.max(axis=-1).astype(np.int16) - rgb.min(axis=-1).astype(np.int16)


def ultrasound_regions(ds: Any, shape: tuple[int, int] | None = None) -> list[UltrasoundRegion]:
    """SequenceOfUltrasoundRegions as boxes clipped to the image (some files are cropped copies)."""
    out = []
    for item in ds.get("SequenceOfUltrasoundRegions", []) or []:
        try:
            x0, y0 = int(item.RegionLocationMinX0), int(item.RegionLocationMinY0)
            x1, y1 = int(item.RegionLocationMaxX1), int(item.RegionLocationMaxY1)
        except (AttributeError, TypeError, ValueError):
            continue
        if shape is not None:
            h, w = shape
            x0, x1 = max(0, min(x0, w - 1)), max(0, min(x1, w - 1))
            y0, y1 = max(0, min(y0, h - 1)), max(0, min(y1, h - 1))
        if x1 <= x0 or y1 <= y0:
            continue
        spacing = None
        ux, uy = item.get("PhysicalUnitsXDirection"), item.get("PhysicalUnitsYDirection")
        dx, dy = item.get("PhysicalDeltaX"), item.get("PhysicalDeltaY")
        if ux == _UNIT_CM and uy == _UNIT_CM and dx and dy and float(dx) > 0 and float(dy) > 0:
            spacing = (float(dx) * 10.0, float(dy) * 10.0)
        out.append(
            UltrasoundRegion(
                box=(x0, y0, x1, y1),
                spatial_format=int(item.get("RegionSpatialFormat", 0) or 0),
                data_type=int(item.get("RegionDataType", 0) or 0),
                spacing_mm=spacing,
            )
        )
    return out


def _tissue_regions(regions: list[UltrasoundRegion]) -> list[UltrasoundRegion]:
    return [r for r in regions if r.spatial_format == _SPATIAL_2D]


def region_spacing_mm(regions: list[UltrasoundRegion]) -> float | None:
    """Isotropic pixel size of the largest 2D tissue region (mean of dx, dy), None when absent."""
    cands = [r for r in _tissue_regions(regions) if r.spacing_mm is not None]
    if not cands:
        return None
    best = max(cands, key=lambda r: (r.box[2] - r.box[0]) * (r.box[3] - r.box[1]))
    dx, dy = best.spacing_mm  # type: ignore[misc]
    if abs(dx - dy) > 0.05 * max(dx, dy):
        log.warning("anisotropic ultrasound region spacing %.4f x %.4f mm; using the mean", dx, dy)
    return (dx + dy) / 2.0


def detect_scan_mask(value: np.ndarray, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Boolean mask of the scan area (fan or rectangle) of one (H, W) uint8 image.

    Written here because no installed library detects ultrasound fans: the scan is the largest
    region where non-black pixels are dense (speckle), after an opening that breaks thin UI text;
    each row is then filled between its outermost scan pixels (fans and rectangles are
    row-convex) so anechoic cavities stay inside. `box` restricts the search (DICOM regions).
    """
    h, w = value.shape
    allowed = np.zeros((h, w), bool)
    if box is None:
        allowed[:] = True
    else:
        x0, y0, x1, y1 = box
        allowed[y0:y1, x0:x1] = True
    win = max(9, min(h, w) // 30)
    density = ndimage.uniform_filter((value > 5).astype(np.float32), size=win)
    m = (density > 0.5) & allowed
    r = max(3, min(h, w) // 60)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    m = ndimage.binary_opening(m, structure=(xx**2 + yy**2) <= r * r)
    lab, n = ndimage.label(m)
    if n == 0:
        return allowed if box is not None else np.zeros((h, w), bool)
    sizes = ndimage.sum_labels(m, lab, index=np.arange(1, n + 1))
    keep = sizes >= 0.2 * sizes.max()  # dual-view scans have two fans of similar size
    m = keep[lab - 1] & (lab > 0)
    m = ndimage.binary_fill_holes(m)
    # rows, then columns, then rows again: anechoic areas that touch the fan edge (a full bladder
    # at the top of a curved fan) are filled too
    for axis in (0, 1, 0):
        m = _span_fill(m if axis == 0 else m.T)
        m = m if axis == 0 else m.T
    return m & allowed


def _span_fill(m: np.ndarray) -> np.ndarray:
    """Fill each row between its first and last set pixel."""
    filled = np.zeros_like(m)
    for y in np.flatnonzero(m.any(axis=1)):
        xs = np.flatnonzero(m[y])
        filled[y, xs[0] : xs[-1] + 1] = True
    return filled


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) with exclusive ends of a boolean mask, None when empty."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def read_dicom(source: str | Path | Any) -> DicomImage:
    """Decode a DICOM file (path or pydicom Dataset) into grayscale frames plus scan geometry.

    Raises DataError naming the file when it holds no decodable image.
    """
    name = str(source) if isinstance(source, str | Path) else str(getattr(source, "filename", "<dataset>"))
    try:
        ds = pydicom.dcmread(source) if isinstance(source, str | Path) else source
        ybr = _decode_ybr(ds)
        raw = decode_frames(ds) if ybr is None else None
    except DataError:
        raise
    except Exception as err:  # pydicom raises many types for bad pixel data
        raise DataError(f"{name}: cannot decode pixel data ({type(err).__name__}: {err})") from None
    if ybr is not None:
        # luma is the Y plane; colour frames are only converted when the first one shows colour
        gray = np.ascontiguousarray(ybr[..., 0])
        rgb, first_rgb, value = None, _ybr_to_rgb(ybr[:1])[0], gray
    elif raw.ndim == 4:
        rgb = raw
        gray = to_grayscale(rgb)
        value = rgb.max(axis=-1)
        first_rgb = rgb[0]
    else:
        rgb, gray, value, first_rgb = None, raw, raw, None
    h, w = gray.shape[1:3]
    regions = ultrasound_regions(ds, (h, w))
    tissue = _tissue_regions(regions)
    box = None
    if tissue:
        box = (
            min(r.box[0] for r in tissue),
            min(r.box[1] for r in tissue),
            max(r.box[2] for r in tissue) + 1,
            max(r.box[3] for r in tissue) + 1,
        )
    # the union over frames finds the scan area in cines where one frame is nearly black
    ref = value.max(axis=0) if value.shape[0] <= 8 else value[:: max(1, value.shape[0] // 8)].max(axis=0)
    scan_mask = detect_scan_mask(ref, box)
    if not scan_mask.any():
        scan_mask = np.ones((h, w), bool)
    frac = 0.0
    if first_rgb is not None:
        coloured = chroma(first_rgb) > CHROMA_THRESHOLD
        frac = float(coloured[scan_mask].mean()) if scan_mask.any() else 0.0
    if ybr is not None and frac > DOPPLER_FRACTION:
        rgb = _ybr_to_rgb(ybr)  # colour Doppler cine: keep its colour frames
    ft = ds.get("FrameTime")
    return DicomImage(
        frames=gray,
        rgb=rgb,
        photometric=str(ds.get("PhotometricInterpretation", "")),
        doppler=frac > DOPPLER_FRACTION,
        doppler_fraction=frac,
        pixel_spacing_mm=region_spacing_mm(regions),
        regions=regions,
        scan_box=mask_box(scan_mask),
        scan_mask=scan_mask,
        frame_time_ms=float(ft) if ft not in (None, "") else None,
    )


def testdata_ultrasound_files() -> list[Path]:
    """Every Modality == US file shipped in pydicom's test files and the pydicom-data package.

    Scans the installed directories directly (never downloads), sorted by file name.
    """
    roots = [Path(pydicom.data.__file__).parent / "test_files"]
    try:
        import data_store  # lazy: optional pydicom-data package (ImportError below)

        roots.append(Path(data_store.__file__).parent / "data")
    except ImportError:
        log.info("pydicom-data is not installed; only pydicom's own test files are scanned")
    found = []
    for root in roots:
        for p in sorted(root.rglob("*.dcm")):
            try:
                ds = pydicom.dcmread(p, stop_before_pixels=True)
            except Exception:  # test folders hold deliberately broken files
                continue
            if ds.get("Modality") == "US":
                found.append(p)
    return sorted(found, key=lambda p: p.name)
