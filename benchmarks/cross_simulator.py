# SPDX-License-Identifier: Apache-2.0
"""Cross-simulator check: zero-shot lesion attributes on images from an independent simulator.

A model pretrained on sonofm's simulated data may have learned sonofm's rendering shortcuts (its
speckle, PSF, the way it draws shadows) rather than what the attribute words mean in an
ultrasound image. This benchmark renders breast lesion phantoms with PyMUST's SIMUS (see
``benchmarks/pymust_phantoms.py`` for the phantoms and what SIMUS does and does not model), writes
them as a sonofm dataset, and runs the eval suite's own zero-shot attribute task
(`sonofm.eval.tasks.zeroshot.ZeroShotAttributes`) on it and on the test split of a
sonofm-simulated dataset. Per attribute tag it prints and writes
(``benchmarks/results/cross_simulator.json``, atomically): the AUC on the PyMUST set, the AUC on
the sonofm-simulated test split, the gap (PyMUST - sonofm), the positives of each, the floor (an
untrained model of the same architecture on the PyMUST set) and the SIMUS time per image.

A large negative gap on a tag the model gets right in-simulator means that tag was learned from
sonofm's rendering, not from the physics the phantom shares with it.

The PyMUST set is cached in ``--pymust-data`` (default ``.sonofm-cache/pymust/<params>``) and
reused (or resumed) when the parameters match; every image is its own patient in the test split,
so ``sonofm eval --model M --data <that dir> --suite quick`` also runs on it unchanged.

Usage::

    pip install -e '.[bench]'                                  # pymust
    python benchmarks/cross_simulator.py --model runs/us/model --sim-data data/sim
    python benchmarks/cross_simulator.py --model M --sim-data D --n 48 --workers 2 --no-floor
    python benchmarks/cross_simulator.py --model M --sim-data D --note "development model"
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

# `python benchmarks/x.py` puts benchmarks/ first on sys.path, where a script named like a stdlib
# module would shadow it for torch's imports: move it last (the helper module below lives there).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE] + [str(_HERE)]

import numpy as np  # noqa: E402
import pymust_phantoms as phantoms  # noqa: E402  (benchmarks/pymust_phantoms.py)

ROOT = _HERE.parent
RESULTS = ROOT / "benchmarks" / "results" / "cross_simulator.json"


def machine() -> dict[str, Any]:
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "platform": platform.platform(),
        "cores": cores,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_avg_1min_at_start": round(os.getloadavg()[0], 2),
    }


def default_pymust_dir(n: int, seed: int, size: int, density: float) -> Path:
    return ROOT / ".sonofm-cache" / "pymust" / f"breast-n{n}-seed{seed}-s{size}-d{density:g}"


# ----------------------------------------------------------------------------- evaluation


def _finite(d: dict[str, Any]) -> dict[str, Any]:
    """NaN (an undefined bound) as None, so the results file is strict JSON."""
    return {k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in d.items()}


def attribute_scores(
    model: Any, model_id: str, data: Path, *, regions: list[str] | None, n_boot: int, seed: int, workers: int
) -> dict[str, Any]:
    """The suite's zero-shot attribute task on `data`'s test split: per-tag AUC CIs and positives."""
    from sonofm.data.manifest import read_manifest
    from sonofm.eval.embed import embed_split, pick_device
    from sonofm.eval.tasks.base import EvalContext
    from sonofm.eval.tasks.zeroshot import ZeroShotAttributes

    dev = pick_device("cpu")
    df = read_manifest(data)
    df = df[df["split"] == "test"]
    if regions:
        df = df[df["region"].isin(regions)]
    df = df.reset_index(drop=True)
    df.attrs["root"] = str(Path(data).resolve())
    if df.empty:
        raise SystemExit(f"{data}: no test images" + (f" in regions {regions}" if regions else ""))
    emb = embed_split(model, df, data, "test", model_id=model_id, device=dev, workers=workers, texts=False)
    ctx = EvalContext(
        model=model, df=df, root=Path(data), embeddings={"test": emb}, n_boot=n_boot, seed=seed, device=dev
    )
    res = ZeroShotAttributes().run(ctx)
    # positives of each scored tag: the labels the task itself scored (its lesion population)
    positives = {
        k.removeprefix("auc/"): int(np.sum(arrays[0]))
        for k, (_, arrays) in res.samples.items()
        if k.startswith("auc/")
    }
    metrics = {k: _finite(v.to_dict()) for k, v in res.metrics.items()}
    return {
        "data": str(data),
        "regions": regions or "all",
        "n_images": len(emb.ids),
        "n_lesion_images": int(res.info.get("n", 0)),
        "skipped": res.skipped,
        "auc": {k.removeprefix("auc/"): m for k, m in metrics.items() if k.startswith("auc/")},
        "mean_auc": {k.removeprefix("mean_auc/"): m for k, m in metrics.items() if k.startswith("mean_auc/")},
        "positives": positives,
    }


def compare(pym: dict[str, Any], sim: dict[str, Any], floor: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per tag scored on the PyMUST set: both AUCs, the gap, positives, the floor."""
    rows = []
    for tag, m in pym["auc"].items():
        s = sim["auc"].get(tag)
        f = floor["auc"].get(tag) if floor else None
        rows.append(
            {
                "tag": tag,
                "pymust_auc": m["value"],
                "pymust_ci": [m["ci_low"], m["ci_high"]],
                "sim_auc": None if s is None else s["value"],
                "sim_ci": None if s is None else [s["ci_low"], s["ci_high"]],
                "gap": None if s is None else m["value"] - s["value"],
                "pymust_positives": pym["positives"].get(tag, 0),
                "pymust_n": m["n"],
                "sim_positives": sim["positives"].get(tag, 0),
                "sim_n": None if s is None else s["n"],
                "floor_pymust_auc": None if f is None else f["value"],
            }
        )
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean AUCs over the tags scored on both sets (the like-for-like comparison)."""
    both = [r for r in rows if r["sim_auc"] is not None]
    if not both:
        return {"tags_on_both": 0}
    out: dict[str, Any] = {
        "tags_on_both": len(both),
        "mean_pymust_auc": float(np.mean([r["pymust_auc"] for r in both])),
        "mean_sim_auc": float(np.mean([r["sim_auc"] for r in both])),
    }
    out["mean_gap"] = out["mean_pymust_auc"] - out["mean_sim_auc"]
    floors = [r["floor_pymust_auc"] for r in both if r["floor_pymust_auc"] is not None]
    if floors:
        out["mean_floor_pymust_auc"] = float(np.mean(floors))
    return out


def print_table(rows: list[dict[str, Any]], summ: dict[str, Any]) -> None:
    def f(v: float | None) -> str:
        return "   -  " if v is None else f"{v:6.3f}"

    has_floor = any(r["floor_pymust_auc"] is not None for r in rows)
    cols = ("pymust", "95% CI", "sonofm", "gap", "n+ pym", "n+ sim")
    head = f"{'attribute tag':32s} " + " ".join(f"{c:>{13 if c == '95% CI' else 6}s}" for c in cols)
    print(head + (f" {'floor':>6s}" if has_floor else ""))
    for r in sorted(rows, key=lambda r: r["tag"]):
        ci = f"[{r['pymust_ci'][0]:.2f}, {r['pymust_ci'][1]:.2f}]"
        line = (
            f"{r['tag']:32s} {f(r['pymust_auc'])} {ci:>13s} {f(r['sim_auc'])} {f(r['gap'])} "
            f"{r['pymust_positives']:6d} {r['sim_positives']:6d}"
        )
        print(line + (f" {f(r['floor_pymust_auc'])}" if has_floor else ""))
    if summ.get("tags_on_both"):
        extra = f", floor {summ['mean_floor_pymust_auc']:.3f}" if "mean_floor_pymust_auc" in summ else ""
        print(
            f"mean over the {summ['tags_on_both']} tags scored on both: "
            f"pymust {summ['mean_pymust_auc']:.3f}, sonofm-sim {summ['mean_sim_auc']:.3f}, "
            f"gap {summ['mean_gap']:+.3f}{extra} (chance 0.5)"
        )


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path, help="a sonofm model dir (dual encoder)")
    ap.add_argument(
        "--sim-data", required=True, type=Path, help="a sonofm-simulated dataset (its test split)"
    )
    ap.add_argument("--pymust-data", type=Path, default=None, help="where the PyMUST set is cached/reused")
    ap.add_argument("--n", type=int, default=96, help="PyMUST images (default 96: 16 per lesion kind)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=None, help="image size (default: the model's)")
    ap.add_argument("--density", type=float, default=8.0, help="scatterers per mm^2 (default 8)")
    ap.add_argument("--workers", type=int, default=1, help="SIMUS processes (one BLAS thread each)")
    ap.add_argument(
        "--sim-regions", default=None, help="comma list: restrict the sonofm test split (default all)"
    )
    ap.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (patients) per CI")
    ap.add_argument("--no-floor", action="store_true", help="skip the untrained-model floor")
    ap.add_argument("--note", default="", help="a note stored with the results (e.g. which model this is)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    from sonofm.errors import UserError

    try:
        return run(args, argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace, argv: list[str] | None) -> int:
    import torch

    from sonofm.atomic import atomic_write_text
    from sonofm.eval.embed import model_hash
    from sonofm.models import load_model

    torch.set_num_threads(min(torch.get_num_threads(), 2))
    info = machine()
    model = load_model(args.model).eval()
    size = args.size or int(model.config.image.image_size)
    pdir = args.pymust_data or default_pymust_dir(args.n, args.seed, size, args.density)

    t0 = time.perf_counter()

    def progress(done: int, total: int, rec: dict[str, Any]) -> None:
        t = rec["timing"]
        print(
            f"  pymust {done}/{total} {rec['row']['id']}: SIMUS {t['simus_s']:.1f} s + beamforming "
            f"{t['beamform_s']:.1f} s ({t['scatterers']} scatterers)",
            flush=True,
        )

    print(f"PyMUST set -> {pdir}", flush=True)
    made = phantoms.make_dataset(
        pdir, args.n, seed=args.seed, size=size, density=args.density, workers=args.workers, progress=progress
    )
    sim_wall = time.perf_counter() - t0
    timing = phantoms.timing_summary(made["timings"])
    print(
        f"SIMUS {timing['simus_s']['median']:.2f} s/image median (+ beamforming "
        f"{timing['beamform_s']['median']:.2f} s), {made['rendered_now']} rendered now in {sim_wall:.0f} s",
        flush=True,
    )

    mid = model_hash(model, args.model)
    regions = [r.strip() for r in args.sim_regions.split(",")] if args.sim_regions else None
    pym = attribute_scores(model, mid, pdir, regions=None, n_boot=args.n_boot, seed=args.seed, workers=0)
    sim = attribute_scores(
        model, mid, args.sim_data, regions=regions, n_boot=args.n_boot, seed=args.seed, workers=0
    )
    floor = None
    if not args.no_floor:
        torch.manual_seed(args.seed)
        untrained = type(model)(model.config, tokenizer=model.tokenizer, load_pretrained=True).eval()
        floor = attribute_scores(
            untrained,
            f"untrained-{args.seed}",
            pdir,
            regions=None,
            n_boot=args.n_boot,
            seed=args.seed,
            workers=0,
        )
    rows = compare(pym, sim, floor)
    summ = summary(rows)
    print()
    print_table(rows, summ)

    result = {
        "benchmark": "cross_simulator",
        "command": "python "
        + shlex.join(["benchmarks/cross_simulator.py", *(argv if argv is not None else sys.argv[1:])]),
        "note": args.note,
        "model": str(args.model),
        "model_hash": mid,
        "sim_data": str(args.sim_data),
        "pymust_data": str(pdir),
        "machine": info,
        "pymust_simulation": {
            **timing,
            "rendered_now": made["rendered_now"],
            "wall_s_now": round(sim_wall, 1),
            "workers": args.workers,
            "parameters": made["parameters"],
            "note": "seconds per image on one core (one BLAS thread): SIMUS RF of one plane wave, then "
            "I/Q + TGC + DAS + envelope (beamform_s); timings of a reused set are those of its first render",
        },
        "summary": summ,
        "tags": rows,
        "pymust": pym,
        "sonofm_sim": sim,
        "floor_untrained_on_pymust": floor,
        "limits": [
            "SIMUS is linear, single-scattering, 2-D (no elevation), one homogeneous attenuation: posterior "
            "enhancement and shadowing are imposed on the scatterers by a straight-ray approximation",
            "one 0-degree plane wave, receive-only focusing: an anechoic cyst reads about -13 dB, not black",
            "partially developed speckle (8 scatterers/mm^2), a 3.5 MHz array: chosen for seconds per image",
            "breast only, homogeneous background with a skin line: no fat lobules, ligaments, ribs",
            "no vascularity (B-mode only); the sonofm set's vascularity tags are not compared",
        ],
    }
    atomic_write_text(args.out, json.dumps(result, indent=2, allow_nan=False, default=float) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
