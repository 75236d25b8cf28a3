"""The one image pipeline: an image file (or its bytes) -> the tensor a model reads.

Every job that feeds images to a model goes through these steps, in this order, so that a
model sees the same input at training, evaluation, serving, indexing, fine-tuning and in the
VLM (a preprocessing difference between training and serving is a silent accuracy bug):

1. **decode** (:func:`read_gray`, :func:`read_label_map`): through :mod:`sonofm.data.decode`,
   under its one pixel limit, failing as :class:`~sonofm.data.decode.ImageDecodeError`;
2. **colour policy**: B-mode is grayscale, so colour images become luminance (PIL's ``L``) and
   16-bit images are scaled by their maximum to 8 bits; label maps keep their palette indices;
3. **resize** (:func:`resize_image`, :func:`resize_mask`): to the model's square ``image_size``
   with PIL, bilinear for images and nearest for label maps; an image already that size is left
   untouched;
4. **scale** (:func:`unit_tensor`, :func:`unit_from_uint8`): uint8 -> float32 in [0, 1];
5. **normalise** (:func:`normalise`): inside the model, with the mean/std and channel count its
   ``config.json`` stores (``ImageTower.preprocess`` calls this function), so a model directory
   is self-describing and callers never normalise by hand.

Steps 1-4 together are :func:`load_model_input` (a file) and :func:`model_input` (a decoded
array). Augmentation, where a training job asks for it, runs between steps 3 and 4 on the
[0, 1] image (see :func:`sonofm.data.dataset.build_item`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from sonofm.data.decode import MAX_PIXELS, Source, decode_image


def read_gray(src: Source, *, name: str | None = None, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """uint8 (H, W) luminance of a PNG/JPEG file or its bytes (colour -> luminance, 16-bit -> 8)."""
    return decode_image(src, "gray", name=name, max_pixels=max_pixels)


def read_label_map(src: Source, *, name: str | None = None) -> np.ndarray:
    """uint8 (H, W) label map (palette images keep their indices)."""
    return decode_image(src, "mask", name=name)


def _resize(arr: np.ndarray, size: int, resample: int) -> np.ndarray:
    if arr.shape[0] == size and arr.shape[1] == size:
        return arr
    return np.asarray(Image.fromarray(np.ascontiguousarray(arr)).resize((size, size), resample=resample))


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W) -> (size, size), PIL bilinear; an image already that size comes back as is."""
    return _resize(image, size, Image.Resampling.BILINEAR)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Label map (H, W) -> (size, size), nearest neighbour (labels are never blended)."""
    return _resize(mask, size, Image.Resampling.NEAREST)


def to_unit(image: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1]."""
    return image.astype(np.float32) / 255.0


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """A [0, 1] float (H, W) array (e.g. after augmentation) -> float32 tensor (1, H, W)."""
    return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]


def unit_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W) -> float32 tensor (1, H, W) in [0, 1]."""
    return image_tensor(to_unit(image))


def unit_from_uint8(images: torch.Tensor) -> torch.Tensor:
    """A uint8 batch (B, 1, S, S) -> float32 in [0, 1]; equal, element for element, to `unit_tensor`."""
    return images.float().div_(255.0)


def load_gray_resized(src: Source, size: int, *, name: str | None = None) -> np.ndarray:
    """Steps 1-3: uint8 (size, size) of an image file, as every model reads it before scaling."""
    return resize_image(read_gray(src, name=name), size)


def model_input(image: np.ndarray, size: int) -> torch.Tensor:
    """Steps 3-4 for an already decoded uint8 (H, W) image -> float (1, S, S) in [0, 1]."""
    return unit_tensor(resize_image(image, size))


def load_model_input(src: Source, size: int, *, name: str | None = None) -> torch.Tensor:
    """Steps 1-4: an image file or its bytes -> float (1, S, S) in [0, 1], ready for the model."""
    return model_input(read_gray(src, name=name), size)


def image_size_of(model: Any) -> int:
    """The square input side a model (or its config) was built for: ``config.image.image_size``."""
    cfg = getattr(model, "config", model)
    return int(cfg.image.image_size)


Stats = torch.Tensor | Sequence[float]


def normalise(images: torch.Tensor, mean: Stats, std: Stats, in_chans: int) -> torch.Tensor:
    """Step 5, the model's own preprocessing: [0, 1] (B, 1|3, H, W) -> (B, in_chans, H, W) normalised.

    One channel fed to a 3-channel tower is repeated (grayscale as RGB, like PIL's convert("RGB"));
    three channels fed to a 1-channel tower are averaged. mean/std broadcast per channel.
    """
    c = images.shape[1]
    if c == 1 and in_chans == 3:
        images = images.expand(-1, 3, -1, -1)
    elif c == 3 and in_chans == 1:
        images = images.mean(dim=1, keepdim=True)
    # the statistics keep their own dtype (float32): bf16/fp16 images are promoted, as before
    mean_t = torch.as_tensor(mean, device=images.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, device=images.device).view(1, -1, 1, 1)
    return (images - mean_t) / std_t
