"""Measure `sonofm demo` end to end: wall time and peak memory, with the machine it ran on.

Runs the command in a subprocess on a fresh output directory (so nothing is reused) and polls the
whole process tree (the CLI, DataLoader workers, simulator workers) with psutil once a second
(reading PSS walks every process's page tables: ~30-60 ms of CPU per poll for the demo's tree, so
the earlier 0.2 s interval took a fifth of a core from the 2-core run it was timing; the memory
peaks of the demo last seconds, so a 1 s interval still sees them):
`peak_pss_tree_mib` is the largest sum of proportional set sizes over all live processes (shared
copy-on-write pages of forked workers counted once: what the machine actually had to hold; this
is the number checked against the budget), `peak_rss_sum_tree_mib` the same with plain RSS (counts
shared pages once per process, so it overstates), and `peak_rss_max_process_mib` the largest single
process (`resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`, exact, not sampled). Budgets (issue #7):
default <= 15 min and <= 4 GB on 2 cores; `--quick` <= 3 min.

Results are merged into ``benchmarks/results/demo.json`` under the key "default" or "quick".

Usage::

    python benchmarks/demo.py            # the full demo (what `make demo` runs)
    python benchmarks/demo.py --quick    # the quick demo the end-to-end test runs
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# `python benchmarks/x.py` puts benchmarks/ first on sys.path, where a script named like a stdlib
# module (benchmarks/ssl.py) would shadow it: keep only the real paths.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import psutil  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "demo.json"
POLL_S = 1.0  # seconds between memory polls (see the module docstring)
BUDGET = {"default": {"wall_s": 900, "rss_mib": 4096}, "quick": {"wall_s": 180, "rss_mib": 4096}}


def _tree_memory(proc: psutil.Process) -> tuple[int, int]:
    """(sum of PSS, sum of RSS) over the process and its descendants, in bytes."""
    pss = rss = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0, 0
    for p in procs:
        try:
            full = p.memory_full_info()
            rss += full.rss
            pss += getattr(full, "pss", full.rss)  # PSS is Linux-only
        except psutil.Error:
            continue  # exited between listing and reading
    return pss, rss


def sonofm_command() -> list[str]:
    exe = Path(sys.executable).with_name("sonofm")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("sonofm")
    if found:
        return [found]
    return [sys.executable, "-c", "from sonofm.cli import app; app()"]


STAGES = ("simulate", "pretrain-clip", "pretrain-usclip", "eval")


def _current_stage(stages_json: Path) -> str:
    """The stage running now: the first of STAGES not yet in the demo's stages.json (else 'report')."""
    try:
        done = json.loads(stages_json.read_text()).get("stages", {})
    except (OSError, ValueError):
        done = {}
    return next((s for s in STAGES if s not in done), "report")


def run(out: Path, quick: bool, log_path: Path) -> dict:
    cmd = [*sonofm_command(), "demo", "--out", str(out), *(["--quick"] if quick else [])]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}
    peak_pss = peak_rss = 0
    stage_peak: dict[str, int] = {}  # which stage holds the memory peak (PSS per stage)
    t0 = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        ps = psutil.Process(proc.pid)
        while proc.poll() is None:
            pss, rss = _tree_memory(ps)
            peak_pss, peak_rss = max(peak_pss, pss), max(peak_rss, rss)
            stage = _current_stage(out / "stages.json")
            stage_peak[stage] = max(stage_peak.get(stage, 0), pss)
            time.sleep(POLL_S)
    wall = time.perf_counter() - t0
    # ru_maxrss of the largest waited-for descendant, in KiB on Linux
    max_proc_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "command": " ".join(["sonofm", *cmd[-(len(cmd) - len(sonofm_command())) :]]),
        "returncode": proc.returncode,
        "wall_s": round(wall, 1),
        "peak_pss_tree_mib": round(peak_pss / 2**20, 1),
        "peak_rss_sum_tree_mib": round(peak_rss / 2**20, 1),
        "peak_rss_max_process_mib": round(max_proc_kib / 1024, 1),
        "peak_pss_by_stage_mib": {k: round(v / 2**20, 1) for k, v in stage_peak.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="measure `sonofm demo --quick`")
    ap.add_argument("--out", default=None, help="demo output dir (must not exist; default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the temp output dir")
    ap.add_argument("--results", default=str(RESULTS))
    args = ap.parse_args()

    from sonofm.demo import machine_info

    mode = "quick" if args.quick else "default"
    tmp = None
    if args.out:
        out = Path(args.out)
        if out.exists():
            sys.exit(f"{out} exists: the benchmark needs a fresh directory (nothing reused)")
    else:
        tmp = Path(tempfile.mkdtemp(prefix=f"sonofm-demo-{mode}-"))
        out = tmp / "demo"
    log_path = (tmp or out.parent) / f"demo-{mode}.log"
    machine = {**machine_info(), "load_avg_1min_at_start": round(os.getloadavg()[0], 2)}
    print(f"running sonofm demo ({mode}) into {out}; log {log_path}", flush=True)
    res = run(out, args.quick, log_path)
    machine["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
    if res["returncode"] != 0:
        print(Path(log_path).read_text()[-4000:])
        sys.exit(f"sonofm demo failed with exit code {res['returncode']}")
    stages = json.loads((out / "stages.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    budget = BUDGET[mode]
    entry = {
        **res,
        "stage_seconds": {k: v["seconds"] for k, v in stages["stages"].items()},
        "plan": stages["plan"],
        "summary": summary["rows"],
        "budget": budget,
        "within_budget": res["wall_s"] <= budget["wall_s"] and res["peak_pss_tree_mib"] <= budget["rss_mib"],
        "machine": machine,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    doc = json.loads(Path(args.results).read_text()) if Path(args.results).is_file() else {}
    doc["benchmark"] = "demo"
    doc[mode] = entry
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    tmp_out = Path(args.results).with_name(f".{Path(args.results).name}.tmp")
    tmp_out.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp_out, args.results)
    print(
        f"sonofm demo ({mode}): {res['wall_s']:.0f} s wall (budget {budget['wall_s']} s), peak RSS "
        f"{res['peak_pss_tree_mib']:.0f} MiB process tree (PSS) / "
        f"{res['peak_rss_max_process_mib']:.0f} MiB largest "
        f"process (budget {budget['rss_mib']} MiB) on {machine['cpu']} x{machine['cores']} "
        f"(load {machine['load_avg_1min_at_start']} -> {machine['load_avg_1min_at_end']}); "
        f"within budget: {entry['within_budget']}"
    )
    print("stages: " + ", ".join(f"{k} {v:.0f} s" for k, v in entry["stage_seconds"].items()))
    by_stage = res["peak_pss_by_stage_mib"].items()
    print("peak PSS by stage: " + ", ".join(f"{k} {v:.0f} MiB" for k, v in by_stage))
    print(f"wrote {args.results}")
    if tmp is not None and not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
