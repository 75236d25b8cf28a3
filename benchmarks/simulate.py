"""Benchmark the ultrasound simulator.

Prints and writes (``benchmarks/results/simulate.json``):

- images/s through the dataset generator (`sonofm.sim.generator.simulate_dataset`: phantoms,
  physics, reports, PNG writing, manifest) at 128 and 224 px with 1 and 2 worker processes;
- peak resident memory of the whole process tree (sampled with psutil; children included);
- the time 10,000 images would take at that rate (target: <= 15 min at 224 px on 2 cores);
- per-image `render_bmode` time on one core for each probe type (target <= 25 ms at 128 px and
  <= 70 ms at 224 px);
- the speed ratio against pymust's SIMUS (the MUST toolbox): one plane-wave SIMUS acquisition
  with a 128-element L11-5v linear array over the same field of view, delay-and-sum beamformed
  to the same pixel grid. SIMUS time grows linearly with the number of scatterers, so it is
  measured at a few small scatterer counts and extrapolated to a fully developed speckle density
  (scatterers every half wavelength); both the measured and the extrapolated figures are
  reported. A focused line-by-line acquisition would cost one such simulation per transmit
  (~128), so the plane-wave figure is a lower bound on SIMUS's cost.

If no region simulators are registered yet, the generator cannot run; the benchmark then times
this module's own fallback pipeline (a built-in phantom, `render_bmode`, `label_map`, PNG
encoding) in the same worker pool, and says so in the output.

Usage::

    python benchmarks/simulate.py            # full run (a few minutes)
    python benchmarks/simulate.py --quick    # smoke run (~30 s)
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import platform
import resource
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "simulate.json"
log = logging.getLogger("benchmarks.simulate")


# ----------------------------------------------------------------------------- memory


class PeakRSS:
    """Samples the resident memory of this process and all its descendants (sum) in a thread."""

    def __init__(self, interval_s: float = 0.05) -> None:
        import psutil

        self._proc = psutil.Process()
        self._interval = interval_s
        self._stop = threading.Event()
        self.peak_bytes = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        import psutil

        total = 0
        for p in [self._proc, *self._proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._sample())
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._sample())


# ----------------------------------------------------------------------------- fallback pipeline


def _fallback_phantom(rng: np.random.Generator):
    """A breast-like phantom: skin, fat, textured fibroglandular tissue and one lesion."""
    from sonofm.sim.tissue import Band, Ellipse, Tissue, TissueModel

    tm = TissueModel(Tissue("fibroglandular", 0.0, 0.75, label=2, texture_db=3.0, texture_scale_mm=3.0))
    tm.add(Band.flat(0.0, 1.8), Tissue("skin", 6.0, 0.9, label=0))
    tm.add(Band([-30, 30], [1.8, 3.0], [-30, 30], [7.0, 9.0], edge_mm=0.5), Tissue("fat", -8.0, 0.5))
    r = rng.uniform(3.0, 8.0)
    tm.add(
        Ellipse(rng.uniform(-8, 8), rng.uniform(12, 22), r, 0.7 * r, edge_mm=0.6),
        Tissue("lesion", rng.uniform(-20, -5), rng.uniform(0.3, 2.5), label=1),
    )
    return tm


def _fallback_patient(args: tuple[int, int, str]) -> float:
    """Render + label + PNG-encode the images of one fallback 'patient'; returns seconds spent."""
    from PIL import Image

    from sonofm.sim.imaging import label_map, sample_imaging_params
    from sonofm.sim.physics import render_bmode

    index, size, out = args
    t0 = time.perf_counter()
    rng = np.random.default_rng([0, index])
    tm = _fallback_phantom(rng)
    for k in range(3):
        params = sample_imaging_params(rng, "linear", (30.0, 50.0))
        b = render_bmode(tm, params, size, rng)
        mask = label_map(tm, params, size)
        for name, arr in (("img", b.image), ("mask", mask)):
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="PNG", compress_level=6)
            Path(out, f"{index}_{k}_{name}.png").write_bytes(buf.getvalue())
    return time.perf_counter() - t0


def _run_fallback(out: Path, n: int, size: int, workers: int) -> None:
    n_patients = -(-n // 3)
    jobs = [(i, size, str(out)) for i in range(n_patients)]
    if workers == 1:
        for j in jobs:
            _fallback_patient(j)
    else:
        import multiprocessing

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as ex:
            list(ex.map(_fallback_patient, jobs, chunksize=4))


# ----------------------------------------------------------------------------- throughput


def bench_dataset(n: int, size: int, workers: int, use_generator: bool) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="sonofm_bench_"))
    out = tmp / "ds"
    cpu0 = _cpu_seconds()
    try:
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            if use_generator:
                from sonofm.sim.generator import simulate_dataset

                simulate_dataset(out, n, size=size, workers=workers, seed=0, progress=False)
            else:
                out.mkdir()
                _run_fallback(out, n, size, workers)
            elapsed = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cpu_s = _cpu_seconds() - cpu0
    rate = n / elapsed
    return {
        "size": size,
        "workers": workers,
        "images": n,
        "seconds": round(elapsed, 3),
        "images_per_s": round(rate, 2),
        "peak_rss_mb": round(mem.peak_bytes / 2**20, 1),
        "minutes_for_10k": round(10_000 / rate / 60.0, 2),
        # CPU seconds of this process and its finished workers per image: what predicts throughput
        # on a quiet machine when this one is shared (images/s on C free cores ~= C / cpu_s).
        "cpu_ms_per_image": round(1e3 * cpu_s / n, 2),
        "images_per_s_2_quiet_cores": round(2.0 / (cpu_s / n), 1),
    }


def _cpu_seconds() -> float:
    """User + system CPU time of this process and of its terminated, waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def bench_render(sizes: list[int], repeats: int) -> list[dict]:
    """Median single-core `render_bmode` time per probe (in-process, after one warm-up)."""
    from sonofm.sim.imaging import sample_imaging_params
    from sonofm.sim.physics import render_bmode

    depth = {"linear": (30.0, 50.0), "curvilinear": (120.0, 180.0), "phased": (120.0, 160.0)}
    rows = []
    for size in sizes:
        for probe in ("linear", "curvilinear", "phased"):
            times, cpu = [], []
            for i in range(repeats + 1):
                rng = np.random.default_rng([1, size, i])
                tm = _fallback_phantom(rng)
                params = sample_imaging_params(rng, probe, depth[probe])
                t0, c0 = time.perf_counter(), time.process_time()
                render_bmode(tm, params, size, rng)
                if i:  # first call warms caches and imports
                    times.append(time.perf_counter() - t0)
                    cpu.append(time.process_time() - c0)
            rows.append(
                {
                    "size": size,
                    "probe": probe,
                    "median_ms": round(1e3 * float(np.median(times)), 2),
                    "max_ms": round(1e3 * float(np.max(times)), 2),
                    # CPU time is less disturbed than wall time when the machine is shared
                    "median_cpu_ms": round(1e3 * float(np.median(cpu)), 2),
                }
            )
    return rows


# ----------------------------------------------------------------------------- per stage


class _StageClock:
    """CPU seconds spent inside named functions (wrapped in place; nested stages are subtracted)."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._stack: list[float] = []  # child CPU accumulated by the enclosing stage
        self._undo: list[tuple[object, str, object]] = []

    def wrap(self, owner: object, attr: str, stage: str) -> None:
        original = getattr(owner, attr, None)
        if original is None:  # an older tree without this function (A/B against a past commit)
            return

        def timed(*args, **kwargs):
            self._stack.append(0.0)
            c0 = time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                spent = time.process_time() - c0
                inner = self._stack.pop()
                self.cpu[stage] = self.cpu.get(stage, 0.0) + spent - inner
                self.calls[stage] = self.calls.get(stage, 0) + 1
                if self._stack:
                    self._stack[-1] += spent

        setattr(owner, attr, timed)
        self._undo.append((owner, attr, original))

    def wrap_everywhere(self, original: object, stage: str) -> None:
        """Wrap ``original`` in every loaded sonofm module that bound it by name."""
        for mod in list(sys.modules.values()):
            if getattr(mod, "__name__", "").startswith("sonofm"):
                for attr, value in list(vars(mod).items()):
                    if value is original:
                        self.wrap(mod, attr, stage)

    def restore(self) -> None:
        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)


def bench_stages(n: int, size: int) -> dict:
    """CPU-ms per image by stage of the in-process (1-worker) generator.

    Stages: anatomy/phantom (the region simulator minus the physics), physics (``render_bmode``),
    PNG encoding, report writing, the per-patient record (normalise + JSON + atomic write), the
    rest of each patient (overlays, bookkeeping), and the dataset-level work (manifest, splits,
    card) outside the patients.
    """
    import sonofm.data.manifest as manifest
    import sonofm.data.pngio as pngio
    import sonofm.reports as reports
    import sonofm.sim.generator as gen
    import sonofm.sim.physics as physics
    import sonofm.sim.registry as registry
    from sonofm.sim.registry import registered_regions

    registered_regions()  # import every region module so their bound names can be wrapped
    clock = _StageClock()
    clock.wrap_everywhere(physics.render_bmode, "physics")
    clock.wrap(registry, "simulate_patient", "anatomy")
    clock.wrap(pngio, "write_png", "png")
    clock.wrap(reports, "write_report", "report")
    clock.wrap(reports, "study_attributes", "report")
    clock.wrap(manifest, "normalize_records", "record")
    clock.wrap(manifest, "dumps_json", "record")
    clock.wrap(gen, "_atomic_text", "record")
    clock.wrap(gen, "simulate_one_patient", "patient_other")
    tmp = Path(tempfile.mkdtemp(prefix="sonofm_bench_"))
    try:
        gen.simulate_dataset(tmp / "warm", 4, size=size, workers=1, seed=0, progress=False)
        clock.cpu.clear()
        clock.calls.clear()
        c0 = time.process_time()
        gen.simulate_dataset(tmp / "ds", n, size=size, workers=1, seed=0, progress=False)
        total = time.process_time() - c0
    finally:
        clock.restore()
        shutil.rmtree(tmp, ignore_errors=True)
    stages = {k: round(1e3 * v / n, 3) for k, v in sorted(clock.cpu.items())}
    stages["dataset_other"] = round(1e3 * (total - sum(clock.cpu.values())) / n, 3)
    return {"size": size, "images": n, "cpu_ms_per_image": round(1e3 * total / n, 3), "stages": stages}


# ----------------------------------------------------------------------------- SIMUS reference


def render_matching_simus(size: int, repeats: int) -> float:
    """Median seconds of `render_bmode` for SIMUS's setting: L11-5v-like linear array (7.6 MHz,
    38.4 mm aperture), 40 mm deep, same pixel grid size, on the fallback phantom."""
    from sonofm.sim.imaging import ImagingParams
    from sonofm.sim.physics import render_bmode

    params = ImagingParams("linear", 7.6, depth_mm=40.0, focus_mm=20.0, width_mm=38.4)
    tm = _fallback_phantom(np.random.default_rng(0))
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        render_bmode(tm, params, size, i)
        if i:
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def bench_simus(size: int, scatterer_counts: list[int], ours_s: float, repeats: int = 2) -> dict:
    """Time pymust SIMUS + DAS for one plane-wave image; extrapolate to full speckle density."""
    import pymust
    from threadpoolctl import threadpool_limits

    # SIMUS's complex matrix products go through BLAS; pin it to one thread so the comparison is
    # one core against one core (and a busy shared machine does not make BLAS threads spin).
    with threadpool_limits(limits=1):
        return _bench_simus(pymust, size, scatterer_counts, ours_s, repeats)


def _bench_simus(pymust, size: int, scatterer_counts: list[int], ours_s: float, repeats: int) -> dict:
    param = pymust.getparam("L11-5v")  # 128 elements, 7.6 MHz, pitch 0.3 mm
    width_m = param.Nelements * param.pitch
    depth_m = 0.04
    param.c = 1540.0  # getparam leaves the medium unset
    lam = param.c / param.fc
    x = np.linspace(-width_m / 2, width_m / 2, size)
    z = np.linspace(1e-3, depth_m, size)
    xg, zg = np.meshgrid(x, z)
    delays = pymust.txdelay(param, 0.0)  # one plane wave, no tilt
    measured = []
    for n in scatterer_counts:
        rng = np.random.default_rng(n)
        xs = rng.uniform(-width_m / 2, width_m / 2, n)
        zs = rng.uniform(1e-3, depth_m, n)
        rc = rng.standard_normal(n)
        t_simus, t_das = [], []
        for _ in range(repeats):  # best of `repeats`: the machine is shared, take the least disturbed
            t0 = time.perf_counter()
            rf = pymust.simus(xs, zs, rc, delays, param)[0]
            t_simus.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            iq = pymust.rf2iq(rf, param)
            m = pymust.dasmtx(iq, xg, zg, delays, param)
            biq = (m @ iq.flatten(order="F")).reshape(xg.shape, order="F")
            pymust.bmode(biq, 50)
            t_das.append(time.perf_counter() - t0)
        measured.append({"scatterers": n, "simus_s": round(min(t_simus), 3), "das_s": round(min(t_das), 3)})
    ns = np.array([m["scatterers"] for m in measured], dtype=float)
    ts = np.array([m["simus_s"] for m in measured])
    das = float(np.mean([m["das_s"] for m in measured]))
    n_full = int(width_m * depth_m / (lam / 2) ** 2)  # one scatterer per (lambda/2)^2
    # Proportional: the largest measurement's cost per scatterer (an upper bound if SIMUS has a
    # fixed overhead); linear fit: slope of time vs scatterers (ignores the overhead).
    t_prop = float(ts[-1] / ns[-1] * n_full + das)
    slope = float(np.polyfit(ns, ts, 1)[0]) if len(ns) > 1 else float(ts[0] / ns[0])
    t_fit = float(max(slope, 0.0) * n_full + das)
    t_full = t_prop if len(ns) == 1 or slope <= 0 else min(t_prop, t_fit)
    return {
        "probe": "L11-5v (128 elements, 7.6 MHz), one plane-wave transmit, DAS to the same grid",
        "threads": 1,
        "field_of_view_mm": [round(width_m * 1e3, 1), depth_m * 1e3],
        "size": size,
        "measured": measured,
        "full_speckle_scatterers": n_full,
        "extrapolated_s_per_image": round(t_full, 1),
        "extrapolated_proportional_s": round(t_prop, 1),
        "extrapolated_linear_fit_s": round(t_fit, 1),
        "sonofm_render_s_per_image": round(ours_s, 4),
        "speed_ratio_vs_sonofm": round(t_full / ours_s, 1),
        "speed_ratio_at_largest_measured": round(
            (measured[-1]["simus_s"] + measured[-1]["das_s"]) / ours_s, 1
        ),
        "note": "SIMUS time (best of repeats) measured at the listed scatterer counts and extrapolated "
        "linearly to one scatterer per (lambda/2)^2 (the smaller of the proportional and the fitted "
        "estimate); a focused line-by-line image would need ~128 such transmits.",
    }


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run (~30 s)")
    ap.add_argument("--n", type=int, default=None, help="images per throughput configuration")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--no-simus", action="store_true", help="skip the pymust SIMUS comparison")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument(
        "--stages-only", action="store_true", help="only the CPU-ms per image by stage (quick, load-robust)"
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    n = args.n or (24 if args.quick else 300)

    from sonofm.sim.registry import registered_regions

    try:
        regions = registered_regions()
    except Exception as exc:  # a broken region module must not hide the physics numbers
        log.warning("region simulators failed to load (%s); using the fallback pipeline", exc)
        regions = ()
    use_generator = bool(regions)
    mode = (
        "generator" if use_generator else "fallback (no regions registered: render_bmode + label_map + PNG)"
    )
    print(f"mode: {mode}; regions: {', '.join(regions) or '-'}")

    command = " ".join(["python", "benchmarks/simulate.py", *(argv if argv is not None else sys.argv[1:])])
    load_before = [round(x, 2) for x in os.getloadavg()]
    stages = [bench_stages(n, size) for size in args.sizes]
    for row in stages:
        parts = ", ".join(f"{k} {v:.2f}" for k, v in row["stages"].items())
        print(f"{row['size']:4d} px: {row['cpu_ms_per_image']:.2f} CPU-ms/image in process ({parts})")
    if args.stages_only:
        _write(args.out, {"stages": stages, "command": command, "load_before": load_before}, merge=True)
        return 0

    render = bench_render(args.sizes, repeats=3 if args.quick else 15)
    for r in render:
        print(
            f"render_bmode {r['probe']:12s} {r['size']:4d} px: "
            f"{r['median_ms']:7.1f} ms (max {r['max_ms']:.1f}, CPU {r['median_cpu_ms']:.1f})"
        )

    if use_generator:  # untimed warm-up: module imports of the in-process (1-worker) path
        bench_dataset(4, min(args.sizes), 1, use_generator)
    throughput = []
    for size in args.sizes:
        for w in args.workers:
            row = bench_dataset(n, size, w, use_generator)
            throughput.append(row)
            print(
                f"{size:4d} px, {w} worker(s): {row['images_per_s']:7.2f} images/s, "
                f"peak RSS {row['peak_rss_mb']:.0f} MB, 10k images in {row['minutes_for_10k']:.1f} min, "
                f"CPU {row['cpu_ms_per_image']:.1f} ms/image (2 quiet cores: "
                f"{row['images_per_s_2_quiet_cores']:.0f} images/s)"
            )

    simus = None
    if not args.no_simus:
        size = 64 if args.quick else 128  # pixels of the DAS grid (same field of view as ours)
        counts = [100, 200] if args.quick else [1000, 2000, 4000, 8000]
        simus = bench_simus(size, counts, render_matching_simus(size, repeats=5 if args.quick else 15))
        last = simus["measured"][-1]
        print(
            f"SIMUS ({size} px grid): {last['simus_s'] + last['das_s']:.1f} s at {last['scatterers']} "
            f"scatterers; extrapolated {simus['extrapolated_s_per_image']} s at "
            f"{simus['full_speckle_scatterers']} scatterers = {simus['speed_ratio_vs_sonofm']}x sonofm"
        )

    ru_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ru_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result = {
        "mode": mode,
        "command": command,
        "date": _now(),
        "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "stages": stages,
        "quick": args.quick,
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "render_bmode_single_core": render,
        "throughput": throughput,
        "peak_rss_mb": max((t["peak_rss_mb"] for t in throughput), default=None),
        "ru_maxrss_mb": {"self": round(ru_self, 1), "largest_child": round(ru_children, 1)},
        "simus": simus,
        "targets": {
            "images_per_s_128": 30,
            "images_per_s_224": 10,
            "minutes_for_10k_224": 15,
            "peak_rss_mb": 2048,
        },
    }
    _write(args.out, result)
    return 0


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="seconds")


def _write(out: Path, result: dict, merge: bool = False) -> None:
    """Write the result file atomically; ``merge`` updates only the given keys of an existing one."""
    if merge and out.is_file():
        old = json.loads(out.read_text())
        result = {**old, "stages_run": {**result, "date": _now(), "load_after": list(os.getloadavg())}}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    raise SystemExit(main())
