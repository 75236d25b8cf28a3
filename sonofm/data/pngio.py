"""Reading and writing dataset PNGs (images and label-map masks), atomically and reproducibly.

Kept out of `sonofm.sim` so that the simulator's physics stays numpy/scipy only. Writes pin the
zlib compression level and carry no metadata (no time stamps, no text chunks), so the same array
always gives the same bytes: the byte-identical dataset contract depends on it.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from sonofm.atomic import atomic_write
from sonofm.data.decode import decode_image

PNG_COMPRESS_LEVEL = 6


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of a uint8 (H, W) grayscale/label map or (H, W, 3) RGB array."""
    arr = np.ascontiguousarray(array)
    if arr.dtype != np.uint8:
        raise ValueError(f"PNG arrays must be uint8, got {arr.dtype}")
    if arr.ndim == 2:
        img = Image.fromarray(arr, mode="L")
    elif arr.ndim == 3 and arr.shape[2] == 3:
        img = Image.fromarray(arr, mode="RGB")
    else:
        raise ValueError(f"PNG arrays must be (H, W) or (H, W, 3), got shape {arr.shape}")
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL, optimize=False)
    return buf.getvalue()


def write_png(path: str | Path, array: np.ndarray) -> Path:
    """Write `array` to `path` atomically (temporary file in the same directory, then rename)."""
    path = Path(path)
    data = encode_png(array)
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
    return path


def read_png(path: str | Path) -> np.ndarray:
    """A PNG as a uint8 array: (H, W) for grayscale/label maps, (H, W, 3) for colour.

    Decoded by :func:`sonofm.data.decode.decode_image` (one pixel limit; failures raise
    ImageDecodeError, a DataError).
    """
    return decode_image(path, "keep")
