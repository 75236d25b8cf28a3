"""Run every benchmark's quick mode in sequence and print one summary (what `make bench` runs).

Quick modes are smoke runs: they prove each benchmark still works end to end and give rough
numbers; the figures quoted in the README come from the full runs (`python benchmarks/NAME.py`).
So the quick results never touch ``benchmarks/results/``: each benchmark runs from a fresh copy
of the benchmark scripts in the work directory (default ``.sonofm-cache/bench/``), where its
results file lands, with its output in ``logs/NAME.log``.

Resumable: ``run_all.json`` in the work directory records each benchmark's status, time, command
and results as soon as it finishes (atomically), and a rerun skips the ones that passed with the
same command (``--fresh`` starts over, ``--only`` picks benchmarks). A benchmark whose optional
dependency is missing is skipped with a line naming the extra to install.

Usage::

    python benchmarks/run_all.py                         # all quick modes (tens of minutes on 2 cores)
    python benchmarks/run_all.py --only report_parser,index
    python benchmarks/run_all.py --list
    python benchmarks/run_all.py --fresh --timeout 900
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STATE_NAME = "run_all.json"


@dataclass(frozen=True)
class Bench:
    """One benchmark script and its quick-mode arguments."""

    args: tuple[str, ...]
    # import name -> the pyproject extra that provides it: missing means skip
    requires: dict[str, str] = field(default_factory=dict)
    # import name -> (how to install it, arguments that run without it): missing means run degraded
    optional: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    # why the benchmark has no quick mode (then it is listed and skipped)
    no_quick: str | None = None


# Cheapest first, so an interrupted run has the most results.
BENCHMARKS: dict[str, Bench] = {
    "report_parser": Bench(("--quick",)),
    "report_context": Bench(
        (), optional={"medspacy": ("a separate --target dir, see the script's docstring", ())}
    ),
    "simulate": Bench(("--quick",), optional={"pymust": ("pip install -e '.[bench]'", ("--no-simus",))}),
    "index": Bench(("--n", "20000", "--clusters", "500", "--queries", "100", "--hnsw-n", "5000")),
    "eval": Bench(("--images", "64", "--gallery", "5000", "--repeats", "1", "--workers", "0")),
    "pretrain": Bench(("--quick",)),
    "ssl_pretrain": Bench(("--seconds", "3")),
    "serve": Bench(
        ("--clients", "1,4", "--requests", "32", "--cases", "1000"),
        requires={"fastapi": "serve", "uvicorn": "serve", "httpx": "serve"},
    ),
    "finetune": Bench(("--quick",)),
    "finetune_dense": Bench(("--quick",)),
    "ablation": Bench(("--quick",)),
    "learning_curve": Bench(("--quick",)),
    "demo": Bench(("--quick",)),
    "vlm": Bench((), no_quick="needs trained runs (--data --heldout --clip --moe-run); see its usage"),
    "cross_simulator": Bench(
        (), no_quick="needs a trained model and its simulated data (--model --sim-data); see its usage"
    ),
}
# Modules in benchmarks/ that are helpers, not benchmarks.
HELPERS = {"run_all", "openclip_anchor", "pymust_phantoms"}


def missing(modules: dict[str, Any]) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def plan(name: str, bench: Bench) -> tuple[list[str] | None, str]:
    """(quick-mode arguments, note); arguments None means skip, and the note says why."""
    if bench.no_quick:
        return None, f"no quick mode: {bench.no_quick}"
    if gone := missing(bench.requires):
        extras = sorted({bench.requires[m] for m in gone})
        return None, f"needs {', '.join(gone)}: pip install -e '.[{','.join(extras)}]'"
    args, notes = list(bench.args), []
    for module in missing(bench.optional):
        install, fallback = bench.optional[module]
        args += fallback
        how = f"{' '.join(fallback)}; " if fallback else ""
        notes.append(f"without {module} ({how}for the full run: {install})")
    return args, "; ".join(notes)


def command_of(name: str, args: list[str]) -> str:
    return " ".join(["python", f"benchmarks/{name}.py", *args])


def load_state(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def save_state(path: Path, state: dict[str, Any]) -> None:
    from sonofm.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(state, indent=2) + "\n")


def run_one(name: str, args: list[str], work: Path, timeout: float) -> dict[str, Any]:
    """Run `benchmarks/NAME.py ARGS` from a fresh copy of the scripts under `work`."""
    scripts = work / "benchmarks"
    if scripts.exists():
        shutil.rmtree(scripts)
    scripts.mkdir(parents=True)
    for f in HERE.glob("*.py"):
        shutil.copy2(f, scripts / f.name)
    results = scripts / "results"
    results.mkdir()
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    log = logs / f"{name}.log"
    cmd = [sys.executable, str(scripts / f"{name}.py"), *args]
    start = time.perf_counter()
    with log.open("wb") as out:
        try:
            proc = subprocess.run(cmd, cwd=work, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
            rc: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            rc = None
    seconds = round(time.perf_counter() - start, 1)
    found: dict[str, Any] = {}
    for f in sorted(results.rglob("*")):
        if f.is_file():
            try:
                found[str(f.relative_to(results))] = (
                    json.loads(f.read_text(encoding="utf-8")) if f.suffix == ".json" else "(written)"
                )
            except (OSError, ValueError):
                found[str(f.relative_to(results))] = "(unreadable)"
    status = "ok" if rc == 0 else ("timeout" if rc is None else "failed")
    return {
        "status": status,
        "returncode": rc,
        "seconds": seconds,
        "command": command_of(name, args),
        "log": str(log),
        "results": found,
        "output_tail": tail(str(log), 20, indent="").splitlines(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def tail(path: str, lines: int = 5, indent: str = "      ") -> str:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace").rstrip().splitlines()
    except OSError:
        return ""
    return "\n".join(indent + line for line in text[-lines:])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=None, help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    ap.add_argument("--work", type=Path, default=ROOT / ".sonofm-cache" / "bench", help="work directory")
    ap.add_argument("--fresh", action="store_true", help="forget earlier results and run everything again")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per benchmark (default 1800)")
    ap.add_argument("--list", action="store_true", help="print the plan and exit")
    args = ap.parse_args(argv)

    unknown = sorted({p.stem for p in HERE.glob("*.py")} - set(BENCHMARKS) - HELPERS)
    if unknown:
        print(f"note: not in run_all's table (add them to BENCHMARKS): {', '.join(unknown)}")
    names = list(BENCHMARKS)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        if bad := [n for n in names if n not in BENCHMARKS]:
            ap.error(f"unknown benchmark(s) {', '.join(bad)}; known: {', '.join(BENCHMARKS)}")

    work = args.work.expanduser().resolve()
    work.mkdir(parents=True, exist_ok=True)
    state_file = work / STATE_NAME
    state = {} if args.fresh else load_state(state_file)
    planned = {name: plan(name, BENCHMARKS[name]) for name in names}
    if args.list:
        for name, (bench_args, note) in planned.items():
            what = "skip" if bench_args is None else command_of(name, bench_args)
            print(f"{name:15s} {what}" + (f"   [{note}]" if note else ""))
        return 0

    print(f"quick benchmarks -> {work} (results files, logs/, {STATE_NAME})")
    for i, name in enumerate(names, 1):
        bench_args, note = planned[name]
        head = f"[{i}/{len(names)}] {name}"
        if bench_args is None:
            print(f"{head}: skipped, {note}")
            state[name] = {"status": "skipped", "reason": note}
            save_state(state_file, state)
            continue
        command = command_of(name, bench_args)
        earlier = state.get(name, {})
        if earlier.get("status") == "ok" and earlier.get("command") == command:
            print(f"{head}: done earlier ({earlier['seconds']} s, {earlier['finished']}); --fresh to rerun")
            continue
        print(f"{head}: {command}" + (f"   [{note}]" if note else ""), flush=True)
        record = run_one(name, bench_args, work, args.timeout)
        if note:
            record["note"] = note
        state[name] = record
        save_state(state_file, state)
        print(f"    {record['status']} in {record['seconds']} s; log {record['log']}", flush=True)
        if record["status"] != "ok":
            print(tail(record["log"]))

    print("\nsummary (quick modes; full runs give the README figures)")
    print(f"{'benchmark':15s} {'status':8s} {'seconds':>8s}  results / reason")
    for name in names:
        r = state.get(name, {})
        what = ", ".join(r.get("results", {})) or r.get("reason", "") or f"printed only: {r.get('log', '')}"
        print(f"{name:15s} {r.get('status', '-'):8s} {r.get('seconds', ''):>8}  {what}")
    failed = [n for n in names if state.get(n, {}).get("status") in ("failed", "timeout")]
    if failed:
        print(f"\n{len(failed)} failed: {', '.join(failed)} (logs in {work / 'logs'})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
