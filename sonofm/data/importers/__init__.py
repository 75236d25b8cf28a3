"""Importers for published ultrasound dataset layouts -> the sonofm dataset directory.

Each `import_<name>(src, out) -> ImportResult` reads one published layout, writes ``images/``,
``masks/``, ``manifest.parquet``, ``dataset.json`` and ``import_report.json`` (skipped samples
counted per reason). `IMPORTERS` maps the CLI format names to them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sonofm.data.importers._common import ImportResult


def _busi(src: Path, out: Path) -> ImportResult:
    from sonofm.data.importers.busi import import_busi

    return import_busi(src, out)


def _thyroid(src: Path, out: Path) -> ImportResult:
    from sonofm.data.importers.thyroid import import_thyroid

    return import_thyroid(src, out)


def _ultrabench(src: Path, out: Path) -> ImportResult:
    from sonofm.data.importers.ultrabench import import_ultrabench

    return import_ultrabench(src, out)


def _echovlm(src: Path, out: Path) -> ImportResult:
    from sonofm.data.importers.sharegpt import import_sharegpt

    return import_sharegpt(src, out, name="echovlm")


def _us365k(src: Path, out: Path) -> ImportResult:
    from sonofm.data.importers.us365k import import_us365k

    return import_us365k(src, out)


def _camus(src: Path, out: Path) -> ImportResult:
    from sonofm.data.importers.echo import import_camus

    return import_camus(src, out)


def _echonet(src: Path, out: Path) -> ImportResult:
    from sonofm.data.importers.echo import import_echonet

    return import_echonet(src, out)


IMPORTERS: dict[str, Callable[[Path, Path], ImportResult]] = {
    "busi": _busi,
    "tn3k": _thyroid,
    "ddti": _thyroid,
    "ultrabench": _ultrabench,
    "echovlm": _echovlm,
    "us365k": _us365k,
    "camus": _camus,
    "echonet": _echonet,
}

__all__ = ["IMPORTERS", "ImportResult"]
