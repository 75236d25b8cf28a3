"""Decoded training images kept in memory across epochs.

A pretraining run reads every training image once per epoch, and decoding the PNG is about half
of the loader's CPU (0.4 of ~0.8 ms an image at 128 px, measured with ``benchmarks/pretrain.py
--part loader``). On a 2-core machine that CPU is taken from the training step. The cache keeps each
image decoded and resized to the model's size (uint8, before augmentation, which stays random per
epoch) in one block allocated by the training process, in shared memory when loader workers
(forked or started afresh each epoch) fill it, in ordinary memory when the training process loads
its own batches (`train.workers: auto` on a CPU; a container's /dev/shm is often 64 MB): later
epochs read from it, so every file is decoded once per run. MONAI's ``CacheDataset`` does the
same for deterministic transforms but fills its cache up front in the parent and per process; a
lazily filled block shared by all workers costs nothing before step 1 and holds one copy.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch

log = logging.getLogger(__name__)

SHM_DIR = "/dev/shm"


def _shm_free_bytes() -> int | None:
    """Free space where torch puts shared memory on Linux (a container's /dev/shm may be 64 MB)."""
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


class DecodedImageCache:
    """``n`` slots of (size, size) uint8 images plus each image's decoded (h, w), in shared memory.

    A slot is written before its ``filled`` flag is set; two workers that decode the same image
    write the same bytes, so no lock is needed.
    """

    def __init__(self, n: int, size: int, *, shared: bool = True) -> None:
        self.size = size
        self.images = torch.zeros((n, size, size), dtype=torch.uint8)
        self.source_hw = torch.zeros((n, 2), dtype=torch.int32)
        self.filled = torch.zeros(n, dtype=torch.bool)
        if shared:  # worker processes write into the parent's block
            for block in (self.images, self.source_hw, self.filled):
                block.share_memory_()

    @classmethod
    def create(
        cls, n: int, size: int | None, budget_mb: float, *, shared: bool = True
    ) -> DecodedImageCache | None:
        """A cache for ``n`` images at ``size`` px, or None when it is off, does not fit the budget
        or, ``shared`` (loader workers fill it), would not fit in the shared-memory filesystem (half
        its free space at most)."""
        if not budget_mb or size is None or n <= 0:
            return None
        need = n * (size * size + 9)
        if need > budget_mb * 2**20:
            log.info(
                "decoded-image cache off: %d images at %d px need %.0f MB, over data.image_cache_mb=%g",
                n,
                size,
                need / 2**20,
                budget_mb,
            )
            return None
        free = _shm_free_bytes() if shared else None
        if free is not None and need > free / 2:
            log.warning(
                "decoded-image cache off: it needs %.0f MB and %s has %.0f MB free",
                need / 2**20,
                SHM_DIR,
                free / 2**20,
            )
            return None
        return cls(n, size, shared=shared)

    def __len__(self) -> int:
        return int(self.filled.shape[0])

    def get(self, index: int) -> tuple[np.ndarray, tuple[int, int]] | None:
        """The resized image and the (h, w) it was decoded at, or None if not cached yet."""
        if not bool(self.filled[index]):
            return None
        h, w = self.source_hw[index].tolist()
        return self.images[index].numpy().copy(), (h, w)  # a copy: callers may change it

    def put(self, index: int, image: np.ndarray, source_hw: tuple[int, int]) -> None:
        """Keep a decoded image already resized to the cache's size."""
        if image.shape != (self.size, self.size) or image.dtype != np.uint8:
            raise ValueError(
                f"cache slot is uint8 ({self.size}, {self.size}); got {image.dtype} {image.shape}"
            )
        self.images[index].numpy()[...] = image  # written in place: the block is shared
        self.source_hw[index] = torch.tensor(source_hw, dtype=torch.int32)
        self.filled[index] = True

    def fill_fraction(self) -> float:
        return float(self.filled.float().mean()) if len(self) else 0.0
