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
"""

from __future__ import annotations

import importlib
import json
import logging
import multiprocessing
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np

from sonofm import __version__
from sonofm.errors import UserError

log = logging.getLogger(__name__)

TOOL = "sonofm simulate"
FORMAT_VERSION = 1
STATE_FILE = "_params.json"  # inside records/; marks the directory as this generator's own
REALISM_KNOBS = ("burned_in_text", "doppler_box")
SPLIT_NAMES = ("train", "val", "test")
SPLIT_BLOCK = 20  # splits are exact within each block of 20 consecutive patients
_RECORD_RE = re.compile(r"^p(\d{6,})\.json$")
_TUNED: list[bool] = []  # whether this process has tuned its allocator (see `_tune_process`)


# ----------------------------------------------------------------------------- parameters


def _normalise_realism(realism: Mapping[str, bool] | Iterable[str] | None) -> dict[str, bool]:
    if realism is None:
        on: set[str] = set()
    elif isinstance(realism, Mapping):
        on = {k for k, v in realism.items() if v}
        unknown = set(realism) - set(REALISM_KNOBS)
    else:
        on = set(realism)
        unknown = on - set(REALISM_KNOBS)
    if realism is not None and unknown:
        raise UserError(f"unknown realism knob(s) {sorted(unknown)}; valid: {', '.join(REALISM_KNOBS)}")
    return {k: k in on for k in REALISM_KNOBS}


def _normalise_splits(splits: Sequence[float]) -> tuple[float, float, float]:
    shown = splits if isinstance(splits, str) else ",".join(str(s) for s in splits)
    try:
        vals = tuple(float(s) for s in splits)
    except (TypeError, ValueError):
        raise UserError(f"--splits must be three numbers train,val,test, got {shown!r}") from None
    if len(vals) != 3 or any(not np.isfinite(v) or v < 0 for v in vals):
        raise UserError(f"--splits must be three non-negative numbers train,val,test, got {shown!r}")
    if abs(sum(vals) - 1.0) > 1e-6:
        raise UserError(f"--splits must sum to 1, got {','.join(f'{v:g}' for v in vals)} (sum {sum(vals):g})")
    return vals  # type: ignore[return-value]


def _import_plugins(plugins: Sequence[str]) -> None:
    for mod in plugins:
        try:
            importlib.import_module(mod)
        except ImportError as err:
            raise UserError(f"cannot import simulator plugin module {mod!r}: {err}") from None


def _resolve_regions(regions: Sequence[str] | str | None) -> tuple[str, ...]:
    from sonofm.sim.registry import registered_regions

    valid = registered_regions()
    if regions is None:
        if not valid:
            raise UserError("no region simulators are registered")
        return valid
    if isinstance(regions, str):
        regions = [r for r in regions.split(",")]
    wanted = [r.strip() for r in regions if r.strip()]
    if not wanted:
        raise UserError(f"--regions is empty; valid regions: {', '.join(valid)}")
    unknown = [r for r in wanted if r not in valid]
    if unknown:
        bad = ", ".join(map(repr, unknown))
        raise UserError(f"unknown region(s) {bad}; valid regions: {', '.join(valid)}")
    return tuple(dict.fromkeys(wanted))  # de-duplicated, in the order given


def canonical_command(params: Mapping[str, Any]) -> str:
    """The CLI call that reproduces a dataset (output dir and worker count do not change content)."""
    sp = ",".join(f"{v:g}" for v in params["splits"])
    cmd = (
        f"sonofm simulate --out DATASET_DIR --n {params['n']} --regions {','.join(params['regions'])} "
        f"--size {params['size']} --seed {params['seed']} --splits {sp}"
    )
    for knob, on in params["realism"].items():
        if on:
            cmd += " --" + knob.replace("_", "-")
    if params.get("clean_looks"):
        cmd += f" --clean-looks {params['clean_looks']}"
    return cmd


def patient_split(seed: int, index: int, fractions: Sequence[float], block: int = SPLIT_BLOCK) -> str:
    """The split of patient `index`: exact proportions within each block of `block` patients.

    Per-block largest-remainder counts shuffled by a stream of (seed, block) keep small datasets
    close to the requested fractions (a per-patient coin flip would not) while still depending
    only on (seed, index, fractions).
    """
    fr = np.asarray(fractions, dtype=np.float64)
    raw = fr * block
    counts = np.floor(raw).astype(int)
    for k in np.argsort(-(raw - counts), kind="stable")[: block - counts.sum()]:
        counts[k] += 1
    b, pos = divmod(index, block)
    labels = np.repeat(np.arange(len(fr)), counts)
    order = np.random.default_rng([seed, 1, b, 0x53504C54]).permutation(block)
    return SPLIT_NAMES[int(labels[order[pos]])]


def _assign_splits(rows: list[dict[str, Any]], fractions: Sequence[float], seed: int) -> str:
    """Rewrite each row's split with `sonofm.sim.splits.stratified_splits` (in place).

    The per-patient draw in the records (`patient_split`) ignores content, which left regions
    out of val/test in small datasets; this assignment sees every patient's region and views.
    Returns a note on what could not be covered ("" when every stratum is in every split).
    """
    from sonofm.sim.splits import coverage_note, patients_from_rows, stratified_splits

    split_of, missing = stratified_splits(patients_from_rows(rows), fractions, seed)
    for r in rows:
        r["split"] = split_of[str(r["patient_id"])]
    note = coverage_note(missing)
    if note:
        log.warning("simulate: %s", note)
    return note


def patient_region(regions: Sequence[str], index: int) -> str:
    return regions[index % len(regions)]


def patient_id(seed: int, index: int) -> str:
    return f"sim-{seed}-p{index:06d}"


# ----------------------------------------------------------------------------- one patient


def _safe_key(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(key)) or "s0"


def _record_path(out: Path, index: int) -> Path:
    return out / "records" / f"p{index:06d}.json"


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _check_sim_image(sim: Any, size: int, where: str) -> None:
    img = np.asarray(sim.image)
    if img.dtype != np.uint8 or img.shape[:2] != (size, size):
        raise RuntimeError(f"{where}: image must be uint8 ({size}, {size}), got {img.dtype} {img.shape}")
    mask = sim.mask
    if mask is not None and (mask.dtype != np.uint8 or mask.shape != (size, size)):
        raise RuntimeError(f"{where}: mask must be uint8 ({size}, {size}), got {mask.dtype} {mask.shape}")


def simulate_one_patient(out: str | Path, params: Mapping[str, Any], index: int) -> int:
    """Simulate patient `index`, write its PNGs then its record; return its number of images.

    Module-level (picklable) so process pools can run it; depends only on its arguments.
    """
    from sonofm.data.manifest import dumps_json, normalize_records
    from sonofm.data.pngio import write_png
    from sonofm.reports import study_attributes, write_report
    from sonofm.sim import overlays
    from sonofm.sim.registry import simulate_patient

    out = Path(out)
    seed, size = int(params["seed"]), int(params["size"])
    region = patient_region(params["regions"], index)
    pid = patient_id(seed, index)
    split = patient_split(seed, index, params["splits"])
    looks = int(params.get("clean_looks", 0))  # opt-in despeckling targets (sonofm.sim.compound)
    if looks:
        from sonofm.sim.compound import simulate_with_clean

        (out / "clean").mkdir(exist_ok=True)
        images, cleans = simulate_with_clean(
            region, np.random.default_rng([seed, index]), size, looks, [seed, index, 3]
        )
    else:
        images = simulate_patient(region, np.random.default_rng([seed, index]), size)
    if not images:
        raise RuntimeError(f"region simulator {region!r} returned no images for patient {index}")
    report_rng = np.random.default_rng([seed, index, 1])
    overlay_rng = np.random.default_rng([seed, index, 2])
    knobs = params["realism"]
    rows = []
    for k, sim in enumerate(images):
        iid = f"{pid}-{k:02d}"
        _check_sim_image(sim, size, f"{region} patient {index} image {k}")
        pixels = np.asarray(sim.image)
        imaging = dict(sim.imaging)
        realism: dict[str, Any] = dict(knobs)
        if knobs["burned_in_text"]:
            pixels, info = overlays.burn_in_text(pixels, overlay_rng, imaging)
            realism["text"] = info
        if knobs["doppler_box"] and pixels.ndim == 2:
            vasc = [f.tag for f in sim.study.present("vascularity")]
            pixels, info = overlays.doppler_box(
                pixels, sim.mask, sim.fan_mask, overlay_rng, vascularity=(vasc or [None])[0], organ=sim.organ
            )
            realism["doppler"] = info
        imaging["realism"] = realism
        write_png(out / "images" / f"{iid}.png", pixels)
        mask_rel = None
        if sim.mask is not None:
            write_png(out / "masks" / f"{iid}.png", np.asarray(sim.mask))
            mask_rel = f"masks/{iid}.png"
        rows.append(
            {
                "id": iid,
                "patient_id": pid,
                "study_id": f"{pid}-{_safe_key(sim.study_key)}",
                "split": split,
                "image": f"images/{iid}.png",
                "mask": mask_rel,
                "region": sim.region,
                "organ": sim.organ,
                "view": sim.view,
                "frame": sim.frame,
                "report": write_report(sim.study, report_rng),
                "attributes": study_attributes(sim.study),
                "diagnosis": sim.diagnosis,
                "malignant": None if sim.malignant is None else bool(sim.malignant),
                "measurements": {str(m): float(v) for m, v in sim.study.measurements.items()},
                "landmarks": {str(n): [float(p[0]), float(p[1])] for n, p in sim.landmarks.items()},
                "bbox": [[float(c) for c in b] for b in sim.bboxes],
                "pixel_spacing_mm": float(sim.pixel_spacing_mm),
                "source": "sim",
                "sex": sim.study.sex,
                "imaging": imaging,
                "structured": sim.study.to_dict(),
            }
        )
        if looks:
            write_png(out / "clean" / f"{iid}.png", cleans[k])
            rows[-1]["clean"] = f"clean/{iid}.png"
    # Bugs in a region simulator surface here, naming the row and column, not at assembly time.
    normalize_records(rows, source=f"patient {index} ({region})")
    record = {"index": index, "patient_id": pid, "region": region, "rows": rows}
    _atomic_text(_record_path(out, index), dumps_json(record) + "\n")
    return len(rows)


def _init_worker(plugins: Sequence[str]) -> None:
    _tune_process()
    _import_plugins(plugins)


def _tune_process() -> None:
    """Per-process allocator tuning for simulation (glibc keeps freed large buffers; ~30% faster
    on VMs where page faults are dear). Idempotent; a no-op where glibc's mallopt is missing."""
    from sonofm.sim.physics import tune_allocator

    if not _TUNED:
        _TUNED.append(tune_allocator())


# ----------------------------------------------------------------------------- the directory


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
        if old is None and (out / "dataset.json").is_file():
            try:
                created = json.loads((out / "dataset.json").read_text(encoding="utf-8")).get("created_by", {})
                if created.get("tool") == TOOL:
                    old = created.get("parameters")
            except (json.JSONDecodeError, AttributeError):
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
    from sonofm.data.card import build_card, write_card
    from sonofm.data.manifest import read_manifest, write_manifest

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
    _replace_if_changed(staging, out / "manifest.parquet")
    df = read_manifest(out / "manifest.parquet")
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
        manifest_file=out / "manifest.parquet",
    )
    staging_card = write_card(card, out / "records" / ".dataset-staging.json")
    _replace_if_changed(staging_card, out / "dataset.json")
    if preview:
        from sonofm.data.preview import contact_sheet

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
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

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
