"""Byte-level fingerprint of a simulated dataset, for the reproducibility tests."""

from __future__ import annotations

import hashlib
from pathlib import Path


def dataset_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file except the run log (the only place timings may go)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] != "logs"
    }
