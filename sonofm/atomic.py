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


def atomic_write(
    path: str | Path, write: Callable[[Path], None], *, mode: int | None = None, durable: bool = False
) -> Path:
    """Call `write(tmp_path)` then move the result onto `path`.

    `mode`: the file is created with these permissions (less the umask) before a byte is written,
    e.g. 0o600 for a secret. `durable`: fsync the file before the move and its directory after
    it, so the new file survives a power loss (checkpoints).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if mode is not None:
            tmp.unlink(missing_ok=True)  # a stale temporary would keep its own permissions
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode))
        write(tmp)
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    if durable:
        _fsync(path.parent)
    return path


def _fsync(path: Path) -> None:
    """Flush a file's or a directory's data to disk (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes, *, mode: int | None = None) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), mode=mode)


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
