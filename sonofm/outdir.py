"""Output folders: a job starts a new folder, continues its own, appends when asked, or refuses.

Every job that writes a directory (ingest, pretrain, ssl, finetune, train-vlm, eval, index
build, export) records what it is in ``<out>/.sonofm-job.json``: the job name and a fingerprint of its
settings. Opening the folder again then has one of four outcomes, decided *before* anything is
written (so a bad option never leaves a half-made or damaged folder behind):

- ``new``: the folder is absent or empty.
- ``same``: the same job with the same settings ran here; it continues (resume, skip what is done).
- ``resume`` / ``append``: the user asked to continue or to add to it (``--resume``, ``--append``).
- ``overwrite``: the user asked to replace it (``--overwrite``); only sonofm outputs are removed.

Anything else is refused with one line naming the folder and the options.

Use it in two steps: ``claim = open_output(...)`` (decides, writes nothing; validate every other
option after it), then ``claim.commit()`` (creates the folder, records the job).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sonofm.atomic import atomic_write_text
from sonofm.data.manifest import CARD_FILE, MANIFEST_FILE
from sonofm.errors import UserError
from sonofm.models.model_dir import WEIGHTS_NAME

JOB_FILE = ".sonofm-job.json"
# Files by which a folder written before job records existed is recognised as a sonofm output.
KNOWN_OUTPUTS = (
    JOB_FILE, "config.yaml", MANIFEST_FILE, CARD_FILE, "index.json", "export.json",
    "metrics.jsonl", "results.json", ".ingest", "checkpoints", WEIGHTS_NAME,
    "eval_log.jsonl",
)


def fingerprint(settings: Any) -> str:
    """A stable hash of JSON-able settings (key order does not matter)."""
    blob = json.dumps(settings, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def read_record(out: str | Path) -> dict[str, Any] | None:
    """The job record of `out`, or None (no record, or an unreadable one)."""
    p = Path(out) / JOB_FILE
    try:
        rec = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


@dataclass
class OutputClaim:
    """What a job will do with its output folder; `commit()` makes it so."""

    path: Path
    job: str
    mode: str  # new | same | resume | append | overwrite
    fingerprint: str
    previous: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    accumulate: bool = False  # appendable outputs remember every run that added to them
    _cleared: bool = False

    @property
    def continues(self) -> bool:
        """True when earlier work in the folder is kept and continued (same, resume, append)."""
        return self.mode in ("same", "resume", "append")

    def record(self, **extra: Any) -> dict[str, Any]:
        rec = {"job": self.job, "fingerprint": self.fingerprint, **self.extra, **extra}
        if self.accumulate:
            earlier = _fingerprints(self.previous) if self.continues else []
            rec["fingerprints"] = [*(f for f in earlier if f != self.fingerprint), self.fingerprint]
        return rec

    def write_record(self, folder: str | Path, **extra: Any) -> None:
        """Record the job in `folder`: for jobs that build in a temporary folder and swap it in."""
        text = json.dumps(self.record(**extra), indent=2, sort_keys=True) + "\n"
        atomic_write_text(Path(folder) / JOB_FILE, text)

    def commit(self, **extra: Any) -> Path:
        """Create (or clear, for overwrite) the folder and record this job in it."""
        out = self.path
        if self.mode == "overwrite" and out.exists() and not self._cleared:
            _remove_output(out)
        self._cleared = True  # a second commit (e.g. with a fingerprint known later) only re-records
        out.mkdir(parents=True, exist_ok=True)
        self.write_record(out, **extra)
        return out


def open_output(
    out: str | Path,
    *,
    job: str,
    settings: Any,
    resume: bool = False,
    overwrite: bool = False,
    append: bool = False,
    options: str = "--resume to continue it",
    legacy_same: bool = False,
    accumulate: bool = False,
) -> OutputClaim:
    """Decide what `job` does with the folder `out`; writes nothing, raises UserError to refuse.

    `options` names how this job continues an existing folder (e.g. "--append to add to it");
    `legacy_same` says a folder without a job record is recognisably the same job (e.g. an
    identical config.yaml), so it continues like one; `accumulate` (appendable outputs such as
    an ingest) makes re-running any earlier run of the folder count as the same job.
    """
    claim = _decide(Path(out), job, fingerprint(settings), resume, overwrite, append, options, legacy_same)
    claim.accumulate = accumulate
    return claim


def _fingerprints(record: dict[str, Any] | None) -> list[str]:
    if not record:
        return []
    return [str(f) for f in record.get("fingerprints", [])] or [str(record.get("fingerprint"))]


def _decide(
    out: Path, job: str, fp: str, resume: bool, overwrite: bool, append: bool, options: str,
    legacy_same: bool,
) -> OutputClaim:
    if sum((resume, overwrite, append)) > 1:
        raise UserError("choose one of --resume, --append and --overwrite")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, not a folder; choose a new --out")
    if not out.exists() or not any(out.iterdir()):
        if resume:
            raise UserError(f"--resume: {out} holds no earlier {job} output to continue")
        return OutputClaim(out, job, "new", fp)
    prev = read_record(out)
    known = prev is not None or any((out / n).exists() for n in KNOWN_OUTPUTS)
    if prev is not None and prev.get("job") != job and not overwrite:
        raise UserError(
            f"--out {out}: holds a {prev.get('job')} output, not {job}; "
            "pass --overwrite to replace it, or choose a new --out"
        )
    if overwrite:
        if not known:
            raise UserError(
                f"--overwrite: {out} is not empty and was not written by sonofm; "
                "remove it yourself or choose a new --out"
            )
        return OutputClaim(out, job, "overwrite", fp, prev)
    if resume:
        return OutputClaim(out, job, "resume", fp, prev)
    if append:
        return OutputClaim(out, job, "append", fp, prev)
    if (prev is not None and fp in _fingerprints(prev)) or (prev is None and legacy_same):
        return OutputClaim(out, job, "same", fp, prev)
    what = f"a {job} output with other settings" if known else "files sonofm did not write"
    raise UserError(
        f"--out {out}: already holds {what}; pass {options}, --overwrite to replace it, "
        "or choose a new --out"
    )


def verify_checkpoint_file(path: str | Path) -> None:
    """Cheap integrity check of a torch checkpoint (a zip archive): every member's CRC is read.

    Run before a resumed job writes anything, so a truncated or corrupt checkpoint stops the job
    while the run folder is still exactly as it was.
    """
    p = Path(path)
    try:
        with zipfile.ZipFile(p) as zf:
            bad = zf.testzip()
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as err:
        raise UserError(f"{p}: not a readable sonofm checkpoint ({type(err).__name__}: {err})") from None
    if bad is not None:
        raise UserError(f"{p}: corrupt checkpoint (member {bad} fails its checksum)")


def _remove_output(out: Path) -> None:
    """Move the folder aside, then delete it: a crash midway never leaves a half-deleted output."""
    trash = out.with_name(f".{out.name}.overwritten-{os.getpid()}")
    os.replace(out, trash)
    shutil.rmtree(trash, ignore_errors=True)
