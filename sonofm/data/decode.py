"""The one place where image files are decoded: one pixel limit, one kind of failure.

Training data, eval embedding, the case index, thumbnails and the web server all decode through
here, so a hostile file (a decompression bomb, a truncated or mislabelled image, a decoder bug)
behaves the same everywhere: :class:`ImageDecodeError`, which callers skip and report. It
subclasses ``ValueError`` as well as :class:`~sonofm.errors.DataError`, so loaders that skip on
``(OSError, ValueError)`` keep working, and the CLI prints it as one line.

This is meant to grow into the one image pipeline (colour policy, resize, the model's own
normalisation) that training, eval and serving share.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
from PIL import Image

from sonofm.errors import DataError

# Larger images are refused before their pixels are decoded (a 30000x30000 PNG can be 1 MB on
# disk and 900 MB in memory). Ultrasound frames are far below this (a 4K screen is 8.3 M).
MAX_PIXELS = 64_000_000

Source = str | Path | bytes | BinaryIO


class ImageDecodeError(DataError, ValueError):
    """An image that cannot be decoded safely; the caller skips it and reports why."""


def _label(src: Source, name: str | None) -> str:
    if name is not None:
        return name
    return str(src) if isinstance(src, str | Path) else "image"


def _open_checked(src: Source, label: str, max_pixels: int) -> Any:
    """An opened PIL image whose header passed the pixel limit; its pixels are not decoded yet."""
    fh = io.BytesIO(src) if isinstance(src, bytes) else src
    try:
        im = Image.open(fh)
    except FileNotFoundError:
        raise ImageDecodeError(f"{label}: image file not found") from None
    except Image.DecompressionBombError as err:  # PIL's own, coarser guard fired first
        raise ImageDecodeError(
            f"{label}: image is larger than the {max_pixels}-pixel limit (decompression-bomb guard; {err})"
        ) from None
    except Exception as err:  # UnidentifiedImageError, decoder bugs...
        raise ImageDecodeError(f"{label}: not a readable image ({_why(err)})") from None
    try:
        w, h = im.size
        if w * h > max_pixels:
            raise ImageDecodeError(
                f"{label}: image is {w}x{h} pixels, larger than the {max_pixels}-pixel limit "
                "(decompression-bomb guard)"
            )
        if w < 1 or h < 1:
            raise ImageDecodeError(f"{label}: image has no pixels ({w}x{h})")
    except BaseException:
        im.close()
        raise
    return im


@contextmanager
def open_image(src: Source, *, name: str | None = None, max_pixels: int = MAX_PIXELS) -> Iterator[Any]:
    """A fully loaded PIL image, size-checked before decoding; any failure is ImageDecodeError.

    `name` is what messages call the image (pass a neutral one, e.g. "upload", where the real
    file name must not be shown).
    """
    label = _label(src, name)
    im = _open_checked(src, label, max_pixels)
    try:
        im.load()
        yield im
    except ImageDecodeError:
        raise
    except Exception as err:  # truncated data, bad CRCs, broken palettes, conversions
        raise ImageDecodeError(f"{label}: not a readable image ({_why(err)})") from None
    finally:
        im.close()


def image_size(src: Source, *, name: str | None = None, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(width, height) from the file header alone, under the same pixel limit and errors as `open_image`.

    For callers that need only the geometry (e.g. mapping predictions back to stored pixels):
    no pixel is decoded, yet a bomb or unreadable file fails the same way as everywhere else.
    """
    im = _open_checked(src, _label(src, name), max_pixels)
    try:
        w, h = im.size
        return int(w), int(h)
    finally:
        im.close()


def decode_image(
    src: Source,
    mode: Literal["gray", "mask", "keep"] = "gray",
    *,
    name: str | None = None,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """Decode an image file or bytes into a uint8 array.

    gray: (H, W) luminance; 16-bit grayscale is scaled by its maximum to 8 bits.
    mask: (H, W) label map; palette images keep their indices.
    keep: (H, W) for grayscale/palette, (H, W, 3) for colour (the dataset PNG contract).
    """
    with open_image(src, name=name, max_pixels=max_pixels) as im:
        if mode == "gray":
            if im.mode not in ("L", "I;16", "I"):
                im = im.convert("L")
            arr = np.asarray(im)
            if arr.dtype != np.uint8:
                arr = (arr.astype(np.float32) / max(float(arr.max()), 1.0) * 255).astype(np.uint8)
        elif mode == "mask":
            arr = np.asarray(im if im.mode in ("L", "P") else im.convert("L")).astype(np.uint8)
        elif im.mode in ("L", "P"):
            arr = np.asarray(im).copy()
        elif im.mode in ("RGB", "RGBA", "CMYK", "YCbCr"):
            arr = np.asarray(im.convert("RGB")).copy()
        else:
            arr = np.asarray(im.convert("L")).copy()
    if arr.ndim not in (2, 3) or min(arr.shape[:2]) < 1:
        raise ImageDecodeError(f"{_label(src, name)}: decoded to an unusable array of shape {arr.shape}")
    return arr


def _why(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text[:200]}" if text else type(err).__name__
