"""The simulator's output directory: ownership, resume records, cleanup and no-op installs.

`simulate` refuses a directory it did not make or made with other parameters, reads the records
of finished patients to resume, removes what the final dataset does not contain, installs files
only when their bytes change (keeping mtimes on no-op runs) and appends timings to its log.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sonofm.errors import DataError, UserError
from sonofm.sim.dataset_params import FORMAT_VERSION, TOOL
from sonofm.sim.patient import _atomic_text

log = logging.getLogger("sonofm.sim.generator")  # the generator's logger, as before the split

STATE_FILE = "_params.json"  # inside records/; marks the directory as this generator's own


_RECORD_RE = re.compile(r"^p(\d{6,})\.json$")


def _params_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    keys = list(dict.fromkeys([*new, *old]))
    return [f"{k}={old.get(k)!r} (now {new.get(k)!r})" for k in keys if old.get(k) != new.get(k)]


def _prepare_out(out: Path, params: dict[str, Any]) -> None:
    """Create `out` or check that it is this generator's dataset with the same parameters."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    state = out / "records" / STATE_FILE
    if out.is_dir() and any(out.iterdir()):
        old = None
        if state.is_file():
            try:
                old = json.loads(state.read_text(encoding="utf-8")).get("parameters")
            except (json.JSONDecodeError, AttributeError):
                old = None
        if old is None:
            # deferred: pandas stays out of `import sonofm.sim` (the simulator is numpy/scipy-only)
            from sonofm.data.manifest import DatasetDir  # lazy: keeps pandas out of sonofm.sim

            try:
                created = DatasetDir.read_card(out).get("created_by", {})
                if created.get("tool") == TOOL:
                    old = created.get("parameters")
            except (DataError, AttributeError):
                old = None
        if old is None:
            raise UserError(
                f"--out {out} is not empty and is not a dataset made by `sonofm simulate`; "
                "choose a new or empty directory"
            )
        diff = _params_diff(old, params)
        if diff:
            raise UserError(
                f"--out {out} holds a dataset made with different parameters: {'; '.join(diff)}. "
                "Re-run with the same parameters to resume, or choose a new directory"
            )
    try:
        for sub in ("images", "masks", "records", "logs"):
            (out / sub).mkdir(parents=True, exist_ok=True)
        text = json.dumps({"tool": TOOL, "format_version": FORMAT_VERSION, "parameters": params}, indent=2)
        if not state.is_file() or state.read_text(encoding="utf-8") != text + "\n":
            _atomic_text(state, text + "\n")
    except OSError as err:
        raise UserError(f"cannot write to --out {out}: {err.strerror or err}") from None


def _load_records(out: Path) -> dict[int, list[dict[str, Any]]]:
    """Finished patients: index -> rows, for every readable record (corrupt ones are dropped)."""
    done: dict[int, list[dict[str, Any]]] = {}
    for p in sorted((out / "records").glob("p*.json")):
        m = _RECORD_RE.match(p.name)
        if not m:
            continue
        try:
            rec = json.loads(p.read_text(encoding="utf-8"))
            rows = rec["rows"]
            if int(rec["index"]) != int(m.group(1)) or not rows:
                raise ValueError("index mismatch")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("dropping unreadable record %s; its patient will be simulated again", p)
            p.unlink(missing_ok=True)
            continue
        done[int(m.group(1))] = rows
    return done


def _prefix(done: Mapping[int, list], n: int) -> tuple[int | None, int]:
    """(index of the last patient needed, images covered) over the contiguous finished prefix."""
    total, i = 0, 0
    while i in done:
        total += len(done[i])
        if total >= n:
            return i, total
        i += 1
    return None, total


def _may_be_needed(done: Mapping[int, list], index: int, n: int) -> bool:
    """Whether patient `index` can still be among those holding the first `n` images, given that
    every patient has at least one image."""
    known = sum(len(rows) for i, rows in done.items() if i < index)
    unknown = index - sum(1 for i in done if i < index)
    return known + unknown < n


def _missing_files(out: Path, rows: Iterable[Mapping[str, Any]]) -> bool:
    return any(
        rel is not None and not (out / rel).is_file() for row in rows for rel in (row["image"], row["mask"])
    )


def _cleanup(out: Path, keep_ids: set[str], last: int, seed: int) -> None:
    """Remove what the final dataset does not contain: images of truncated or surplus patients,
    their records, and temporary files left by a kill."""
    pattern = re.compile(rf"^sim-{seed}-p(\d{{6,}})-\d+\.png$")
    for sub in ("images", "masks", "clean"):
        if not (out / sub).is_dir():
            continue
        for p in (out / sub).iterdir():
            stale_tmp = p.name.startswith(".") and ".tmp-" in p.name
            if stale_tmp or (pattern.match(p.name) and p.stem not in keep_ids):
                p.unlink(missing_ok=True)
    for p in (out / "records").iterdir():
        m = _RECORD_RE.match(p.name)
        if (m and int(m.group(1)) > last) or (p.name.startswith(".") and ".tmp-" in p.name):
            p.unlink(missing_ok=True)


def _replace_if_changed(tmp: Path, dest: Path) -> None:
    """Install `tmp` as `dest` unless `dest` already has the same bytes (keeps mtimes on no-op runs)."""
    if dest.is_file() and dest.stat().st_size == tmp.stat().st_size and dest.read_bytes() == tmp.read_bytes():
        tmp.unlink()
    else:
        os.replace(tmp, dest)


def _log_event(out: Path, event: dict[str, Any]) -> None:
    with (out / "logs" / "simulate.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"time": time.time(), **event}) + "\n")
