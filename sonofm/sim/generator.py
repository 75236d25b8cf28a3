"""`sonofm simulate`: turn the region simulators into a dataset directory.

Contract (what the tests pin down):

* **Patients, not images, are the unit.** Patient ``i`` gets region ``regions[i % len(regions)]``,
  its own random stream ``default_rng([seed, i])`` for the simulator (reports and overlays use
  the sibling streams ``[seed, i, 1]`` and ``[seed, i, 2]``) and one split per patient, so
  splits never share a patient. Splits are assigned once all patients are known
  (`sonofm.sim.splits`): every region and echo view lands in every split when there are enough
  patients, and the card's ``created_by.split_coverage`` says which could not. Patients are
  taken in index order until there are exactly ``n`` images; the last patient's images are truncated to fit.
* **Deterministic.** Everything a patient produces depends only on (seed, i, parameters), PNGs
  and the manifest are written with pinned settings, and nothing time-dependent enters the files
  (timings go to ``logs/simulate.jsonl``). So the same parameters give byte-identical files
  whatever the worker count.
* **Resumable.** A patient's PNGs are written first and ``records/p<index>.json`` (its manifest
  rows) last, each atomically; a patient counts as done when its record exists and its files are
  there. A re-run with the same parameters only simulates what is missing, then assembles
  ``manifest.parquet`` and ``dataset.json`` from the records.
* **Safe.** It refuses a non-empty directory that it did not make, and a directory it made with
  other parameters (naming the differences).

Layout written: ``images/<id>.png``, ``masks/<id>.png``, ``manifest.parquet``, ``dataset.json``,
``records/`` (resume state; may be deleted once done), ``logs/simulate.jsonl``, and
``preview.png`` with ``preview=True``.

PNG, Parquet and card writing live in `sonofm.data` and are imported lazily inside functions, so
importing `sonofm.sim` stays numpy/scipy-only.

The process pool uses the "spawn" start method (safe with threads such as the progress bar);
modules named in `plugins` are imported in every worker, so user code can register extra regions
with `sonofm.sim.registry.register`.

This module runs the patients and assembles the dataset; the parts live beside it:
`dataset_params` (arguments, per-patient id/region/split), `patient` (one patient's files and
record) and `output_dir` (ownership check, resume records, cleanup, installs).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from sonofm import __version__
from sonofm.errors import UserError
from sonofm.sim.dataset_params import (  # noqa: F401 (constants and patient_* re-exported)
    FORMAT_VERSION,
    REALISM_KNOBS,
    SPLIT_BLOCK,
    SPLIT_NAMES,
    TOOL,
    _assign_splits,
    _import_plugins,
    _normalise_realism,
    _normalise_splits,
    _resolve_regions,
    canonical_command,
    patient_id,
    patient_region,
    patient_split,
)
from sonofm.sim.output_dir import (  # noqa: F401 (STATE_FILE re-exported)
    STATE_FILE,
    _cleanup,
    _load_records,
    _log_event,
    _may_be_needed,
    _missing_files,
    _prefix,
    _prepare_out,
    _replace_if_changed,
)

# `_Runner` calls `simulate_one_patient` through this module's namespace (tests replace it here)
from sonofm.sim.patient import _record_path, simulate_one_patient
from sonofm.sim.physics import tune_allocator

log = logging.getLogger(__name__)

_TUNED: list[bool] = []  # whether this process has tuned its allocator (see `_tune_process`)


def _init_worker(plugins: Sequence[str]) -> None:
    _tune_process()
    _import_plugins(plugins)


def _tune_process() -> None:
    """Per-process allocator tuning for simulation (glibc keeps freed large buffers; ~30% faster
    on VMs where page faults are dear). Idempotent; a no-op where glibc's mallopt is missing."""
    if not _TUNED:
        _TUNED.append(tune_allocator())


class _Runner:
    """Runs patients in-process (one worker) or in a spawn pool (two in flight per worker)."""

    def __init__(self, out: Path, params: dict[str, Any], workers: int, on_done: Callable[[int, int], None]):
        self.out, self.params, self.workers, self.on_done = out, params, workers, on_done
        self.pool: ProcessPoolExecutor | None = None
        if workers == 1:
            _tune_process()  # the in-process path simulates in this process
        else:
            self.pool = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(tuple(params["plugins"]),),
            )

    def run_until(self, done: dict[int, list], n: int) -> int:
        """Simulate missing patients in index order until patients 0..last hold `n` images; return
        `last`. Patients beyond `last` that were already running finish (and are cleaned up later)."""
        inflight: dict[Future, int] = {}
        cursor = 0
        try:
            while True:
                last, _ = _prefix(done, n)
                if last is not None:
                    break
                if self.pool is None:
                    while cursor in done:
                        cursor += 1
                    try:
                        simulate_one_patient(self.out, self.params, cursor)
                    except Exception as err:
                        region = patient_region(self.params["regions"], cursor)
                        raise RuntimeError(f"simulating patient {cursor} ({region}) failed: {err}") from err
                    self._collect(done, cursor)
                    continue
                while len(inflight) < 2 * self.workers:
                    while cursor in done or cursor in inflight.values():
                        cursor += 1
                    if not _may_be_needed(done, cursor, n):
                        break  # patients finish out of order: never start one that cannot be needed
                    fut = self.pool.submit(simulate_one_patient, str(self.out), self.params, cursor)
                    inflight[fut] = cursor
                if not inflight:
                    raise RuntimeError(f"scheduler stalled before {n} images (bug): done={sorted(done)}")
                finished, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
                for fut in sorted(finished, key=lambda f: inflight[f]):
                    self._result(fut, inflight.pop(fut), done)
        finally:
            for fut in inflight:
                fut.cancel()
        for fut, i in sorted(inflight.items(), key=lambda kv: kv[1]):
            if not fut.cancelled():
                self._result(fut, i, done)
        return last

    def _result(self, fut: Future, index: int, done: dict[int, list]) -> None:
        try:
            fut.result()
        except BrokenProcessPool as err:
            raise RuntimeError(
                "a simulation worker process died (killed, out of memory, or the calling script cannot "
                "be re-imported by the 'spawn' start method, e.g. code piped through stdin: use "
                "workers=1 there or run a script file)"
            ) from err
        except Exception as err:
            region = patient_region(self.params["regions"], index)
            raise RuntimeError(f"simulating patient {index} (region {region}) failed: {err}") from err
        self._collect(done, index)

    def _collect(self, done: dict[int, list], index: int) -> None:
        rows = json.loads(_record_path(self.out, index).read_text(encoding="utf-8"))["rows"]
        done[index] = rows
        self.on_done(index, len(rows))

    def close(self, cancel: bool = False) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=cancel)
            self.pool = None


def simulate_dataset(
    out: str | Path,
    n: int,
    *,
    regions: Sequence[str] | str | None = None,
    size: int = 224,
    seed: int = 0,
    workers: int = 1,
    splits: Sequence[float] = (0.8, 0.1, 0.1),
    preview: bool = False,
    realism: Mapping[str, bool] | Iterable[str] | None = None,
    progress: bool = True,
    plugins: Sequence[str] = (),
    clean_looks: int = 0,
) -> Path:
    """Simulate `n` images (whole patients, the last one truncated) into the dataset dir `out`.

    `regions`: region ids (default: every registered region, echo included); `realism`: knobs
    from REALISM_KNOBS to turn on (``{"doppler_box": True}`` or ``["burned_in_text"]``);
    `plugins`: modules to import (in every worker) before simulating, e.g. to register regions.
    `clean_looks` > 0 also writes despeckling targets ``clean/<id>.png`` (manifest column
    ``clean``): the scene compounded over that many speckle realisations (`sonofm.sim.compound`).
    Returns `out`. Raises `UserError` on bad arguments or an output directory it must not touch.
    """
    from sonofm.data.card import build_card, write_card  # lazy: keeps pandas out of sonofm.sim
    from sonofm.data.manifest import (  # lazy: keeps pandas out of sonofm.sim
        DatasetDir,
        read_manifest,
        write_manifest,
    )

    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n <= 0:
        raise UserError(f"--n must be a positive number of images, got {n!r}")
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or not 32 <= size <= 2048:
        raise UserError(f"--size must be an integer between 32 and 2048 pixels, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise UserError(f"--seed must be a non-negative integer, got {seed!r}")
    if isinstance(workers, bool) or not isinstance(workers, int | np.integer) or workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers!r}")
    if isinstance(clean_looks, bool) or not isinstance(clean_looks, int | np.integer) or clean_looks < 0:
        raise UserError(f"--clean-looks must be a non-negative integer, got {clean_looks!r}")
    plugins = tuple(plugins)
    _import_plugins(plugins)
    params: dict[str, Any] = {
        "n": int(n),
        "regions": list(_resolve_regions(regions)),
        "size": int(size),
        "seed": int(seed),
        "splits": list(_normalise_splits(splits)),
        "realism": _normalise_realism(realism),
        "plugins": list(plugins),
        "sonofm_version": __version__,
        "format_version": FORMAT_VERSION,
    }
    if clean_looks:  # only when on, so default datasets keep their exact parameters and bytes
        params["clean_looks"] = int(clean_looks)
    out = Path(out)
    _prepare_out(out, params)
    t_start = time.perf_counter()
    done = _load_records(out)
    resumed = len(done)
    _log_event(out, {"event": "start", "workers": workers, "params": params, "records_found": resumed})

    bar = _progress_bar(progress, n)
    covered = {"images": min(sum(len(r) for r in done.values()), n)}

    def on_done(index: int, count: int) -> None:
        covered["images"] = min(n, covered["images"] + count)
        if bar is not None:
            bar[0].update(bar[1], completed=covered["images"])
        _log_event(out, {"event": "patient", "index": index, "images": count})

    runner = _Runner(out, params, workers, on_done)
    try:
        if bar is not None:
            bar[0].start()
            bar[0].update(bar[1], completed=covered["images"])
        # A record whose files went missing (deleted by hand, disk trouble) is simulated again.
        for _attempt in range(3):
            last = runner.run_until(done, n)
            rows: list[dict[str, Any]] = []
            broken = []
            for i in range(last + 1):
                take = done[i][: n - len(rows)]
                if _missing_files(out, take):
                    broken.append(i)
                rows.extend(take)
            if not broken:
                break
            log.warning("patients %s have missing files; simulating them again", broken)
            for i in broken:
                _record_path(out, i).unlink(missing_ok=True)
                del done[i]
        else:
            raise RuntimeError(f"files of patients {broken} keep disappearing under {out}")
    except BaseException:
        runner.close(cancel=True)
        raise
    finally:
        if bar is not None:
            bar[0].stop()
    runner.close()

    _cleanup(out, {r["id"] for r in rows}, last, int(seed))
    coverage = _assign_splits(rows, params["splits"], int(seed))
    staging = out / "records" / ".manifest-staging.parquet"
    write_manifest(rows, staging)
    manifest_file = DatasetDir.manifest_file(out)
    _replace_if_changed(staging, manifest_file)
    df = read_manifest(manifest_file)
    created_by = {
        "tool": TOOL,
        "command": canonical_command(params),
        "seed": int(seed),
        "parameters": params,
        "split_method": "per patient, stratified: every region and echo view in every split when possible",
        "split_coverage": coverage or "every region and echo view is in every split",
    }
    card = build_card(
        df,
        created_by=created_by,
        name=f"sonofm-sim-seed{seed}-n{n}",
        description="Simulated ultrasound images with exact labels, made by `sonofm simulate`.",
        manifest_file=manifest_file,
    )
    staging_card = write_card(card, out / "records" / ".dataset-staging.json")
    _replace_if_changed(staging_card, DatasetDir.card_file(out))
    if preview:
        from sonofm.data.preview import contact_sheet  # lazy: keeps pandas out of sonofm.sim

        staging_preview = contact_sheet(out, out / "records" / ".preview-staging.png")
        _replace_if_changed(staging_preview, out / "preview.png")
    seconds = time.perf_counter() - t_start
    _log_event(
        out,
        {
            "event": "done",
            "images": n,
            "patients": last + 1,
            "patients_resumed": resumed,
            "seconds": round(seconds, 3),
            "images_per_s": round(n / max(seconds, 1e-9), 3),
            "workers": workers,
        },
    )
    log.info("simulated %d images (%d patients) into %s in %.1f s", n, last + 1, out, seconds)
    return out


def _progress_bar(enabled: bool, total: int):
    if not enabled:
        return None
    bar = Progress(
        TextColumn("[bold]simulate"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("images"),
        TimeRemainingColumn(),
        console=Console(stderr=True),  # stdout stays free for the caller's own output
        transient=False,
    )
    return bar, bar.add_task("simulate", total=total)
