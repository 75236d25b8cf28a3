"""Importers for published ultrasound dataset layouts -> the sonofm dataset directory.

Each `import_<name>(src, out) -> ImportResult` reads one published layout, writes ``images/``,
``masks/``, ``manifest.parquet``, ``dataset.json`` and ``import_report.json`` (skipped samples
counted per reason). `IMPORTERS` maps the CLI format names to them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from sonofm.data.importers._common import ImportResult

# CLI format name -> (module of this package, its import function, fixed keyword arguments); the
# module is imported when the format is used (CAMUS and EchoNet need optional packages)
_FORMATS: dict[str, tuple[str, str, dict[str, str]]] = {
    "busi": ("busi", "import_busi", {}),
    "tn3k": ("thyroid", "import_thyroid", {}),
    "ddti": ("thyroid", "import_thyroid", {}),
    "ultrabench": ("ultrabench", "import_ultrabench", {}),
    "echovlm": ("sharegpt", "import_sharegpt", {"name": "echovlm"}),
    "us365k": ("us365k", "import_us365k", {}),
    "camus": ("echo", "import_camus", {}),
    "echonet": ("echo", "import_echonet", {}),
}


def _lazy(module: str, function: str, options: dict[str, str]) -> Callable[[Path, Path], ImportResult]:
    def run(src: Path, out: Path) -> ImportResult:
        importer = getattr(importlib.import_module(f"{__name__}.{module}"), function)
        return importer(src, out, **options)

    return run


IMPORTERS: dict[str, Callable[[Path, Path], ImportResult]] = {
    fmt: _lazy(*spec) for fmt, spec in _FORMATS.items()
}

__all__ = ["IMPORTERS", "ImportResult"]
