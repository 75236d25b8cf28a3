"""sonofm datasets: the dataset-directory manifest (pandas/pyarrow) and torch loading.

The names below are resolved lazily (PEP 562 module ``__getattr__``) so that ``import
sonofm.data`` stays cheap and never imports torch: the simulator and the manifest tools run in
processes that have no use for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sonofm.lazy import lazy_exports

if TYPE_CHECKING:
    from sonofm.data.dataset import UltrasoundDataset
    from sonofm.data.loader import build_loader
    from sonofm.data.manifest import load_dataset, read_manifest, write_manifest

_LAZY = {
    "sonofm.data.manifest": ("read_manifest", "write_manifest", "load_dataset"),
    "sonofm.data.dataset": ("UltrasoundDataset",),
    "sonofm.data.loader": ("build_loader",),
}

__all__ = ["UltrasoundDataset", "build_loader", "load_dataset", "read_manifest", "write_manifest"]
__getattr__, __dir__ = lazy_exports(__name__, _LAZY, cache=True)  # cached: later look-ups skip __getattr__
