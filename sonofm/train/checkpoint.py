"""Training checkpoints: everything needed to continue a run bit for bit, written atomically.

A checkpoint is one file (``checkpoints/latest.pt``, ``checkpoints/best.pt``) holding the model,
optimizer, LR scheduler and GradScaler state, the RNG states of every rank (python, numpy,
torch CPU and CUDA), the step / epoch / position inside the epoch, and trainer bookkeeping
(early-stopping state, skipped-sample count). It is written to a temporary file in the same
directory, fsynced and moved into place with ``os.replace``, so a crash at any moment leaves the
previous checkpoint intact. Loading uses ``torch.load(weights_only=True)``: only tensors and
plain containers are stored (RNG states are converted to tensors), never pickled objects.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sonofm.atomic import atomic_write
from sonofm.errors import UserError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
LATEST = "latest.pt"
BEST = "best.pt"


def rng_state() -> dict[str, Any]:
    """This process's RNG states as weights_only-loadable values."""
    py_version, py_state, py_gauss = random.getstate()
    np_state = np.random.get_state(legacy=True)  # ('MT19937', keys, pos, has_gauss, cached)
    state: dict[str, Any] = {
        "python": [py_version, torch.tensor(py_state, dtype=torch.int64), py_gauss],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    py_version, py_state, py_gauss = state["python"]
    random.setstate((int(py_version), tuple(int(v) for v in py_state.tolist()), py_gauss))
    npst = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            npst["keys"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a sibling temporary file, fsync, then ``os.replace`` onto ``path``."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)

    return atomic_write(path, write, durable=True)


def clean_stale_temporaries(directory: str | Path) -> int:
    """Delete ``.*.tmp-*`` leftovers of interrupted writes; returns how many were removed."""
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    removed = 0
    for p in directory.glob(".*.tmp-*"):
        p.unlink(missing_ok=True)
        removed += 1
    return removed


def save_checkpoint(state: dict[str, Any], directory: str | Path, *, best: bool = False) -> Path:
    """Write ``latest.pt`` (and ``best.pt`` when ``best``) atomically in ``directory``."""
    directory = Path(directory)
    state = {"format": FORMAT_VERSION, **state}
    path = atomic_torch_save(state, directory / LATEST)
    if best:
        atomic_torch_save(state, directory / BEST)
    return path


def resolve_checkpoint(resume: str | Path, run_dir: str | Path) -> Path:
    """``"latest"`` / ``"best"`` (inside ``run_dir/checkpoints``) or an explicit file path."""
    if str(resume) in ("latest", "best"):
        path = Path(run_dir) / "checkpoints" / (LATEST if str(resume) == "latest" else BEST)
        if not path.is_file():
            raise UserError(f"--resume {resume}: no checkpoint at {path} (has this run saved one yet?)")
        return path
    path = Path(resume)
    if not path.is_file():
        raise UserError(f"--resume: checkpoint file {path} does not exist")
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (weights_only, so no code runs)."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which and why
        raise UserError(f"{path}: not a readable sonofm checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise UserError(f"{path}: not a sonofm checkpoint (format {state.get('format')!r}, expected 1)")
    return state
