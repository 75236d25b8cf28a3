"""sonofm datasets: the dataset-directory manifest (pandas/pyarrow) and torch loading.

The names below are resolved lazily (PEP 562 module ``__getattr__``) so that ``import
sonofm.data`` stays cheap and never imports torch: the simulator and the manifest tools run in
processes that have no use for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sonofm.data.dataset import UltrasoundDataset
    from sonofm.data.loader import build_loader
    from sonofm.data.manifest import load_dataset, read_manifest, write_manifest

_LAZY: dict[str, str] = {
    "read_manifest": "sonofm.data.manifest",
    "write_manifest": "sonofm.data.manifest",
    "load_dataset": "sonofm.data.manifest",
    "UltrasoundDataset": "sonofm.data.dataset",
    "build_loader": "sonofm.data.loader",
}

__all__ = ["UltrasoundDataset", "build_loader", "load_dataset", "read_manifest", "write_manifest"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache: later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
