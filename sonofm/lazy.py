"""Lazy package exports (PEP 562): a package names what it re-exports and from which module, and
that module is imported on first access, so importing the package itself stays cheap (no torch,
matplotlib, FAISS or onnxruntime until a name that needs them is used).

    _LAZY = {"sonofm.eval.runner": ("run_suite", "Suite"), "sonofm.eval.embed": ("embed_split",)}
    __all__ = lazy_names(_LAZY)
    __getattr__, __dir__ = lazy_exports(__name__, _LAZY)
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_names(exports: Mapping[str, Iterable[str]]) -> list[str]:
    """Every name of `exports` (module -> names), sorted: a package's `__all__`."""
    return sorted(name for names in exports.values() for name in names)


def lazy_exports(
    package: str, exports: Mapping[str, Iterable[str]], *, cache: bool = False
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`, whose names `exports` maps module -> names.

    With `cache`, a resolved name is stored in the package, so later look-ups skip `__getattr__`;
    without, every look-up reads the module's current value (monkeypatching it is seen).
    """
    where = {name: module for module, names in exports.items() for name in names}
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        if cache:
            namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *where})

    return __getattr__, __dir__
