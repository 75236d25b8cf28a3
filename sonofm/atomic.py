"""Atomic file and directory writes: a reader (or a resumed job) never sees a half-written one.

Files: write to a sibling temporary file, then `os.replace` it onto the target; on any error the
temporary file is removed and the previous file (if any) is left untouched.

Directories (a model, an ONNX export, a case index): build the whole tree in a sibling temporary
directory, then swap it onto the target as a whole (`atomic_dir`); an existing target is replaced
only once the new tree is complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)` then move the result onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, data: Any, *, default: Callable[[Any], Any] | None = str) -> Path:
    """`data` as indented JSON (keys in their given order) with a final newline, atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2, default=default) + "\n")


def swap_dir(tmp: Path, target: Path) -> None:
    """Move the finished directory `tmp` onto `target`, replacing an existing `target` as a whole."""
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


@contextmanager
def atomic_dir(target: str | Path, *, mode: int | None = None) -> Iterator[Path]:
    """Yield a sibling temporary directory to fill; on success it replaces `target` as a whole.

    On any error the temporary directory is removed and `target` is left as it was. `mode`: the
    directory's permissions (default: what the umask gives a new directory; `mkdtemp` alone would
    make it private).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    if mode is None:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o777 & ~umask
    os.chmod(tmp, mode)
    try:
        yield tmp
        swap_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
