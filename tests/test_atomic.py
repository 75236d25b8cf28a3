"""sonofm/atomic.py is the writer: permissions set before the first byte, durable writes, cleanup
on failure, and no other module renames its own temporary files into place."""

import os
import re
from pathlib import Path

import pytest

import sonofm
from sonofm.atomic import atomic_write, atomic_write_bytes, atomic_write_text

PACKAGE = Path(sonofm.__file__).parent
# os.replace outside atomic.py, each for a reason that is not "write a file":
OTHER_RENAMES = {
    "outdir.py",  # moves an old run aside (--overwrite)
    "sim/output_dir.py",  # keeps an unchanged file (and its mtime) on a no-op re-run
    "data/shards.py",  # directory builds where another rank may have finished first
}


def test_mode_is_set_before_the_first_byte_and_a_stale_temporary_is_not_reused(tmp_path: Path) -> None:
    path = tmp_path / "key.txt"
    stale = tmp_path / f".key.txt.tmp-{os.getpid()}"
    stale.write_text("old")
    stale.chmod(0o644)
    seen = {}

    def write(tmp: Path) -> None:
        seen["mode"] = tmp.stat().st_mode & 0o777
        tmp.write_bytes(b"secret")

    atomic_write(path, write, mode=0o600)
    assert seen["mode"] == 0o600 and path.stat().st_mode & 0o777 == 0o600
    assert path.read_bytes() == b"secret" and not stale.exists()
    atomic_write_bytes(tmp_path / "k2", b"x", mode=0o600)
    assert (tmp_path / "k2").stat().st_mode & 0o777 == 0o600


def test_failure_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = atomic_write_text(tmp_path / "a" / "f.txt", "one")

    def broken(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken, durable=True)
    assert path.read_text() == "one" and sorted(p.name for p in path.parent.iterdir()) == ["f.txt"]
    atomic_write(path, lambda tmp: tmp.write_text("two"), durable=True)
    assert path.read_text() == "two"


def test_no_module_but_atomic_renames_files_into_place() -> None:
    offenders = []
    for py in PACKAGE.rglob("*.py"):
        rel = py.relative_to(PACKAGE).as_posix()
        if rel == "atomic.py" or rel in OTHER_RENAMES:
            continue
        if re.search(r"\bos\.replace\(|\.tmp-\{os\.getpid\(\)\}", py.read_text(encoding="utf-8")):
            offenders.append(rel)
    assert offenders == []
