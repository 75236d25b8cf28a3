"""Benchmark rows of the dense / regression fine-tuning tasks: landmarks, ef, detect, enhance.

Rows in the format of `benchmarks/finetune.py` (same runner and row fields; results in
``benchmarks/results/finetune_dense.json``): each row is one ``sonofm finetune`` command on
simulated data. Targets (issue #9, tiny preset, simulated heart data): EF MAE <= 5 points,
landmark MRE <= 2 mm. Detection (AP@0.5) and despeckling (PSNR gain over the noisy input) are reported
without an issue target.

`benchmarks/finetune.py` can take these rows with ``DATA.update(DENSE_DATA)`` /
``ROWS.update(DENSE_ROWS)``; run alone, this script uses its runner directly::

    python benchmarks/finetune_dense.py                       # every dense row
    python benchmarks/finetune_dense.py --rows ef,landmarks
    python benchmarks/finetune_dense.py --quick               # smoke: tiny data, 1 epoch
    python benchmarks/finetune_dense.py --record landmarks=RUN --command "sonofm finetune ..."

Torch runs single-threaded here (``OMP_NUM_THREADS=1`` unless set): on a shared, oversubscribed
2-core machine two spinning intra-op threads made a training step ~30x slower.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import finetune as base  # noqa: E402  (benchmarks/finetune.py: the shared runner)

# Own file, so runs of this script and of `benchmarks/finetune.py` never overwrite each other's rows.
RESULTS = base.ROOT / "benchmarks" / "results" / "finetune_dense.json"

# Data sets (`sonofm simulate` settings). `clean_looks` (despeckling targets; `--clean-looks` on the
# CLI) is not among the keys `finetune.ensure_data` passes on, so those sets are built here.
DENSE_DATA: dict[str, dict[str, Any]] = {
    "echo_dense": {"regions": "heart", "n": 1200, "size": 128, "seed": 0, "splits": "0.8,0.1,0.1"},
    "lesion_clean": {
        "regions": "breast,thyroid,liver",
        "n": 300,
        "size": 128,
        "seed": 0,
        "splits": "0.8,0.1,0.1",
        "clean_looks": 8,
    },
}

DENSE_ROWS: dict[str, dict[str, Any]] = {
    "landmarks": {
        "task": "landmarks",
        "data": "echo_dense",
        "adapter": "full",
        "size_overrides": [],
        "overrides": ["task_options.views=[A4C]", "train.epochs=60", "train.lr=1e-3"],
        "target": ("mre_mm", "<=", 2.0),
    },
    "ef": {
        "task": "ef",
        "data": "echo_dense",
        "adapter": "full",
        "size_overrides": [],
        "overrides": ["train.epochs=45", "train.lr=1e-3"],  # 20 epochs: test MAE 6.6 (val 5.0)
        "target": ("mae", "<=", 5.0),
    },
    "detect": {
        "task": "detect",
        "data": "lesion",
        "adapter": "full",
        "size_overrides": ["image.image_size=64"],
        "overrides": ["train.epochs=30", "train.lr=1e-3"],
        "target": ("ap50", ">=", 0.5),
    },
    "enhance": {
        "task": "enhance",
        "data": "lesion_clean",
        "adapter": "full",
        "size_overrides": [],
        "overrides": ["train.epochs=15", "train.lr=1e-3"],
        "target": ("psnr_gain_vs_identity", ">=", 1.0),
    },
}


def ensure_dense_data(name: str, work: Path, quick: bool) -> Path:
    """Build a data set of `DENSE_DATA` (or `finetune.DATA`) once into `work`."""
    spec = dict(DENSE_DATA.get(name) or base.DATA[name])
    looks = int(spec.pop("clean_looks", 0))
    if not looks:
        base.DATA.setdefault(name, spec)
        return base.ensure_data(name, work, quick)
    if quick:
        spec.update(n=40, size=32)
    out = work / f"data-{name}-{spec['n']}-{spec['size']}-looks{looks}"
    if not (out / "manifest.parquet").is_file():
        from sonofm.sim.generator import simulate_dataset

        base._log(f"simulate (python API, clean_looks={looks}): {spec}")
        simulate_dataset(
            out,
            int(spec["n"]),
            regions=spec["regions"],
            size=int(spec["size"]),
            seed=int(spec["seed"]),
            splits=[float(v) for v in spec["splits"].split(",")],
            clean_looks=looks,
            progress=False,
        )
    return out


def record_run(name: str, run_dir: Path, command: str) -> dict[str, Any]:
    """A results row from a finished ``sonofm finetune`` run made by hand with `command` (same fields
    as `finetune.run_finetune`, except wall/CPU time, which only a supervised run can measure)."""
    row = DENSE_ROWS[name]
    res = json.loads((run_dir / "results.json").read_text())
    metric, op, value = row["target"]
    got = res["test"].get(metric, {}).get("mean")
    return {
        "command": command,
        "task": res["task"],
        "adapter": res["adapter"],
        "model": res["model"],
        "fraction": res["fraction"],
        "seeds": res["seeds"],
        "test": {k: {f: v.get(f) for f in base.TEST_FIELDS} for k, v in res["test"].items()},
        "target": {
            "metric": metric,
            "op": op,
            "value": value,
            "got": got,
            "passed": None if got is None else (got >= value if op == ">=" else got <= value),
        },
        "per_seed": [
            {k: r.get(k) for k in ("seed", "test", "best_epoch", "n_images", "n_patients", "train_seconds")}
            for r in res["per_seed"]
        ],
        "recorded_from": str(run_dir),
    }


def _merge_row(out_path: Path, name: str, res: dict[str, Any]) -> None:
    # re-read before each merge: other rows of the file may have been written meanwhile
    doc: dict[str, Any] = json.loads(out_path.read_text()) if out_path.is_file() else {}
    doc.setdefault("rows", {})[name] = res
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, out_path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", default=",".join(DENSE_ROWS), help=f"rows ({', '.join(DENSE_ROWS)})")
    parser.add_argument("--model", default="tiny", help="model preset or sonofm model dir (default tiny)")
    parser.add_argument("--seeds", default="1", help="comma-separated seeds (default 1)")
    parser.add_argument("--fraction", type=float, default=1.0, help="share of training patients labelled")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "sonofm_bench_finetune"))
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny data at 32 px, 1 epoch")
    parser.add_argument("--out", default=str(RESULTS), help="results JSON (rows are merged into it)")
    parser.add_argument("--record", default=None, help="record a finished run: ROW=RUN_DIR (with --command)")
    parser.add_argument("--command", default=None, help="the exact command that made the --record run")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.record:
        name, _, run_dir = args.record.partition("=")
        if name not in DENSE_ROWS or not run_dir or not args.command:
            raise SystemExit("--record needs ROW=RUN_DIR with a known row, and --command")
        _merge_row(Path(args.out), name, record_run(name, Path(run_dir), args.command))
        return

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    names = [r for r in args.rows.split(",") if r]
    unknown = [r for r in names if r not in DENSE_ROWS]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; known: {sorted(DENSE_ROWS)}")
    out_path = Path(args.out)
    tag = "quick" if args.quick else "full"
    for name in names:
        row = DENSE_ROWS[name]
        data = ensure_dense_data(row["data"], work, args.quick)
        extra = [*row["size_overrides"], *row["overrides"]] + (base.QUICK if args.quick else [])
        if (Path(args.model) / "config.json").is_file():
            extra = [e for e in extra if not e.startswith("image.")]
        res = base.run_finetune(
            row, data, work / f"{tag}-{name}", args.model, args.seeds, extra, args.fraction
        )
        res["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")
        base._log(f"{name}: {res['target']}  ({res['wall_s']} s wall, {res['cpu_s']} s CPU)")
        if not args.quick:
            _merge_row(out_path, name, res)


if __name__ == "__main__":
    main()
