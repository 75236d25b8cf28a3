# SPDX-License-Identifier: Apache-2.0
"""Objective ablation with the demo's recipe, reported per patient (docs/methods.md sections 1-3).

Every objective is trained exactly as ``sonofm demo`` trains its two models
(``sonofm.demo._pretrain`` with the ``sonofm.demo.DEFAULT`` plan: model preset, image size,
captions, measured normalisation, epochs, batch size, schedule), once per training seed, on one
simulated data set; only the loss differs:

    clip                      plain CLIP (the baseline every other row is compared with)
    soft_clip                 + soft labels from the attribute tags
    soft_clip+semantic        + the semantic loss L_SM
    soft_clip+semantic+graph  + the attribute graph (Ultrasound-CLIP)
    +view                     Ultrasound-CLIP + the view-informed term
    +negation                 Ultrasound-CLIP + the negation-aware term (hard negative captions)
    +supervised               Ultrasound-CLIP + supervised heads on the manifest labels
    usclip                    the demo's ultrasound-aware model (``sonofm.demo.MODELS["usclip"]``)
    clip+label_text           CLIP + images contrasted with their labels' texts per label group
    usclip/no-label_text      the ultrasound-aware model without its label-text term

(+view, +negation and +supervised each add ONE term to Ultrasound-CLIP; usclip has them all.)
Each model is evaluated with the demo's suite on the test split; the table reports zero-shot
region / view / diagnosis accuracy, zero-shot attribute and finding AUC (means over their
families, as the demo's headline), the linear-probe region accuracy and image->text R@10.

Statistics (``sonofm.eval.stats``), all per patient:

- Seeds are POOLED, not tested per seed and combined: every seed of an objective is scored on the
  same test patients, so per-seed p-values are not independent and cannot be combined (Fisher,
  Stouffer) honestly. A `PatientPool` holds every seed's per-image inputs of a metric (and, for a
  family such as attribute AUC, of every member); each bootstrap resample draws whole test
  patients, and each brings its rows from every seed. The statistic is the mean over seeds (and
  family members) of the metric on the drawn rows; its point value is the mean of the per-seed
  values, listed beside it.
- Value: that statistic with its 95% bias-corrected CI and the number of test patients.
- Versus CLIP: `paired_pooled_test` evaluates the objective and CLIP (seed s against seed s) on the
  same resamples: delta = objective - CLIP with its 95% CI and a two-sided p-value.
- Multiple testing: Holm's correction over every (objective, metric) comparison in the table;
  both raw and Holm-adjusted p-values are written.
- Below ``MIN_PATIENTS`` test patients no CI and no p-value are given (the reason is written).

Resumable: a run whose ``model/`` exists is not retrained (its evaluation is redone, with cached
embeddings). Results: ``benchmarks/results/ablation.json`` and ``ablation.md`` (written atomically).

Usage::

    python benchmarks/ablation.py                          # full: 8 objectives x 3 seeds (about an hour)
    python benchmarks/ablation.py --objectives clip,usclip --seeds 0,1
    python benchmarks/ablation.py --data demo-out/data     # an existing simulated data set
    python benchmarks/ablation.py --quick                  # smoke: 240 images, 1 epoch
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
BASELINE = "clip"
USCLIP = "soft_clip+semantic+graph"  # Ultrasound-CLIP: the base the single-term additions go on

# The table's columns: key -> (suite task, metric, label). A metric ending in "/" is the family of
# metrics with that prefix (e.g. one mean AUC per attribute dimension), averaged as the demo does.
METRICS: dict[str, tuple[str, str, str]] = {
    "region_acc": ("zeroshot/region", "acc1", "zero-shot region acc"),
    "view_acc": ("zeroshot/view", "acc1", "zero-shot view acc"),
    "diagnosis_acc": ("zeroshot/diagnosis", "acc1", "zero-shot diagnosis acc"),
    "attribute_auc": ("zeroshot/attributes", "mean_auc/", "zero-shot attribute AUC"),
    # the tags whose image-side bound reaches 0.9 on validation (each model's own set; the demo's row)
    "learnable_auc": ("zeroshot/attributes_learnable", "mean_auc", "zero-shot attribute AUC, learnable tags"),
    "finding_auc": ("zeroshot/findings", "mean_auc/", "zero-shot finding AUC"),
    "probe_region_acc": ("linear_probe/region", "acc1", "linear probe region acc"),
    "R@10": ("retrieval", "image_to_text/R@10", "image->text R@10"),
}

log = logging.getLogger("ablation")
Unit = tuple[Any, tuple[Any, ...], Any]  # (fn, per-image arrays, patient ids): see eval.stats


def objectives() -> dict[str, str]:
    """Objective name -> loss spec, the baseline first."""
    from sonofm.demo import MODELS, ULTRASOUND_TERMS

    return {
        BASELINE: MODELS["clip"],
        "soft_clip": "soft_clip",
        "soft_clip+semantic": "soft_clip+semantic",
        USCLIP: USCLIP,
        "+view": f"{USCLIP}+view",
        "+negation": f"{USCLIP}+negation",
        "+supervised": f"{USCLIP}+supervised",
        "usclip": MODELS["usclip"],
        "clip+label_text": f"{MODELS['clip']}+label_text",
        "usclip/no-label_text": ULTRASOUND_TERMS,
    }


# Recipe variants of a model, run like objectives (same seeds, paired with clip on the same test
# patients): name -> (objective, changes to the demo plan). A quarter of the optimizer-step batches of
# one region (data.group_by): their negatives differ in findings, not anatomy.
GROUPED = {"group_by": "region", "group_fraction": 0.25}
RECIPE_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "clip/grouped": (BASELINE, GROUPED),
    "usclip/grouped": ("usclip", GROUPED),
}


# plan fields that do not change a trained model (worker counts, the log interval; the suite is
# re-run on every model anyway): a run is reused across them
PLAN_FIELDS_WITHOUT_EFFECT = {"workers", "loader_workers", "log_every", "suite"}


def quick_plan() -> Any:
    """The demo's plan shrunk to a smoke run (same recipe, 240 images, 1 epoch)."""
    from sonofm.demo import DEFAULT

    return dataclasses.replace(DEFAULT, n_images=240, epochs=1, batch_size=32)


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "-", name).strip("-")


def simulate(data: Path, plan: Any) -> None:
    from sonofm.sim.generator import simulate_dataset

    simulate_dataset(
        data, plan.n_images, size=plan.image_size, seed=plan.seed, workers=plan.workers, progress=False
    )


def train(data: Path, work: Path, name: str, loss: str, seed: int, plan: Any) -> dict[str, Any]:
    """Train one (objective, seed) with the demo's recipe unless its model exists; where it is."""
    from sonofm.atomic import atomic_write_text
    from sonofm.demo import CAPTION_SAMPLING, DEFAULT, _pretrain

    # a run of another recipe (before caption sampling joined it) is never reused under this name
    stem = f"{slug(name)}-s{seed}" + (f"-cs{CAPTION_SAMPLING:g}" if CAPTION_SAMPLING else "")
    if plan.group_by and plan.group_fraction:  # nor one without grouped batches
        stem += f"-g{slug(plan.group_by)}{plan.group_fraction:g}"
    if plan.n_images == DEFAULT.n_images:  # nor one of other length (the demo's plan went 5 -> 10)
        stem += f"-e{plan.epochs}"
    run = work / "runs" / stem
    record = work / "runs" / f"{stem}.json"
    info: dict[str, Any] = {"seed": seed, "model": str(run / "model")}
    wanted = dataclasses.asdict(dataclasses.replace(plan, seed=seed))
    if (run / "model" / "config.json").is_file():
        saved = json.loads(record.read_text()) if record.is_file() else {}
        differ = sorted(
            k
            for k, v in (saved.get("plan") or {}).items()
            if k not in PLAN_FIELDS_WITHOUT_EFFECT and wanted.get(k, v) != v
        )
        if saved.get("loss") not in (None, loss):  # e.g. the demo's usclip gained a term
            differ.append(f"loss {saved['loss']!r} vs {loss!r}")
        if differ:  # anything the folder name does not carry (image size, batch size, ...)
            raise SystemExit(
                f"{run} was trained with another plan ({', '.join(differ)} differ: {record}); "
                "move it away or pass another --work"
            )
        log.info("[%s seed %d] model exists, not retrained", name, seed)
        return {**info, "train_seconds": saved.get("train_seconds"), "steps": saved.get("steps")}
    log.info("[%s seed %d] training (%s)", name, seed, loss)
    t0 = time.perf_counter()
    trained = _pretrain(data, run, loss, dataclasses.replace(plan, seed=seed))
    info.update(train_seconds=round(time.perf_counter() - t0, 1), steps=trained.get("steps"))
    record_doc = {"objective": name, "loss": loss, **info, "plan": wanted}
    atomic_write_text(record, json.dumps(record_doc, indent=2))
    return info


def metric_units(run: Any, task: str, metric: str) -> list[Unit]:
    """The per-image inputs of one table metric in an evaluated model (a family: every member)."""
    res = run.results.get(task)
    if res is None or res.skipped:
        return []
    names = [m for m in res.samples if (m.startswith(metric) if metric.endswith("/") else m == metric)]
    units = []
    for m in names:
        fn, arrays = res.samples[m]
        groups = res.groups.get(m)
        if groups is None:
            raise SystemExit(f"{task}/{m}: no patient ids (the suite must use bootstrap_unit: patient)")
        units.append((fn, arrays, groups))
    return units


def evaluate(
    model_dir: str, df: Any, root: Path, suite: Any, cache: Path, label: str
) -> dict[str, list[Unit]]:
    from sonofm.eval.runner import evaluate_model

    run = evaluate_model(
        model_dir,
        df,
        root,
        suite,
        label=label,
        cache_dir=cache,
        device=None,
        precision="fp32",
        workers=0,
        emit=lambda event: None,
    )
    return {key: metric_units(run, task, metric) for key, (task, metric, _) in METRICS.items()}


def _num(v: Any) -> float | None:
    return None if v is None or v != v else float(v)


def analyse(
    units: dict[str, list[dict[str, list[Unit]]]], *, n_boot: int, seed: int = 0
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]], dict[str, Any]]:
    """Per objective and metric: pooled value with CI; versus the baseline: paired delta, CI, p, Holm p.

    `units[objective][i][metric]`: the units of seed i (seeds in the same order for every objective).
    Returns (values, versus baseline, multiple-testing summary).
    """
    from sonofm.eval.stats import (
        PatientPool,
        adjust_pvalues,
        count_significant,
        paired_pooled_test,
        pooled_ci,
    )

    values: dict[str, dict[str, Any]] = {}
    pools: dict[tuple[str, str], Any] = {}
    for name, per_seed in units.items():
        values[name] = {}
        for key in METRICS:
            seed_units = [s.get(key, []) for s in per_seed]
            if not per_seed or any(not u for u in seed_units):
                values[name][key] = {"value": None, "note": "not computed (the task was skipped or empty)"}
                continue
            pool = PatientPool([u for su in seed_units for u in su])
            pools[(name, key)] = pool
            ci = pooled_ci(pool, n_boot=n_boot, seed=seed)
            entry = {
                "value": _num(ci.value),
                "ci_low": _num(ci.low),
                "ci_high": _num(ci.high),
                "n_patients": ci.n_patients,
                "n_rows": ci.n,
                "per_seed": [_num(PatientPool(su).value()) for su in seed_units],
            }
            if ci.note:
                entry["note"] = ci.note
            values[name][key] = entry
    versus: dict[str, dict[str, Any]] = {}
    tested: list[dict[str, Any]] = []
    for name in units:
        if name == BASELINE:
            continue
        versus[name] = {}
        for key in METRICS:
            a, b = pools.get((name, key)), pools.get((BASELINE, key))
            if a is None or b is None:
                versus[name][key] = {"note": "not computed"}
                continue
            if not a.same_rows(b):
                versus[name][key] = {"note": "not paired: scored on other test images than the baseline"}
                continue
            t = paired_pooled_test(a, b, n_boot=n_boot, seed=seed)
            row = {
                "delta": _num(t["delta"]),
                "ci_low": _num(t["delta_ci_low"]),
                "ci_high": _num(t["delta_ci_high"]),
                "p_value": _num(t["p_value"]),
                "p_holm": None,
                "n_patients": t.get("n_patients"),
            }
            if "untestable" in t:
                row["untestable"] = t["untestable"]
            elif row["p_value"] is not None:
                tested.append(row)
            versus[name][key] = row
    p = [r["p_value"] for r in tested]
    for r, ph in zip(tested, adjust_pvalues(p, "holm"), strict=True):
        r["p_holm"] = _num(ph)
    multiple = {
        "method": "holm",
        "family": f"every objective-vs-{BASELINE} comparison in the table",
        "alpha": 0.05,
        "counts": count_significant(p),
    }
    return values, versus, multiple


def _fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _p(v: float | None) -> str:
    return "-" if v is None else ("<0.001" if v < 0.001 else f"{v:.3f}")


def cell(value: dict[str, Any], vs: dict[str, Any] | None) -> str:
    """`value [CI] (Δ vs clip, Holm p)`; without a CI or a test, the reason instead."""
    if value.get("value") is None:
        return "-"
    text = _fmt(value["value"])
    if value.get("ci_low") is not None and value.get("ci_high") is not None:
        text += f" [{_fmt(value['ci_low'])}, {_fmt(value['ci_high'])}]"
    else:
        text += f" [no CI: {value.get('n_patients')} patients]"
    if vs is not None and vs.get("delta") is not None:
        p = "no test" if vs.get("untestable") else f"Holm p {_p(vs.get('p_holm'))}"
        text += f" (Δ {vs['delta']:+.3f}, {p})"
    return text


def _column(doc: dict[str, Any], key: str) -> str:
    """A column's label with the number of test patients its CIs rest on."""
    k = doc["objectives"][BASELINE]["metrics"].get(key, {}).get("n_patients")
    return doc["metrics"][key]["label"] + ("" if k is None else f" ({k} patients)")


def markdown(doc: dict[str, Any]) -> str:
    keys = list(doc["metrics"])
    k = doc["data"]["n_patients"].get("test")
    plan = doc["plan"]
    lines = [
        f"# Objective ablation ({'quick smoke run' if doc['quick'] else 'full run'})",
        "",
        f"Demo recipe ({plan['model']}, {plan['image_size']} px, {plan['epochs']} epochs, "
        f"batch {plan['batch_size']}, caption sampling {doc.get('caption_sampling', 0.0):g}"
        + (
            f", {plan['group_fraction']:g} of the batches grouped by {plan['group_by']}"
            if plan.get("group_by") and plan.get("group_fraction")
            else ""
        )
        + "), "
        f"seeds {doc['seeds']}, data `{doc['data']['dir']}` "
        f"({doc['data']['n_images'].get('test', 0)} test images from {k} test patients).",
        "",
        "Each cell: value [95% CI] (Δ vs clip, Holm-adjusted p). Value: mean over seeds of the metric; "
        "CI and p from resampling whole test patients (each bringing its rows from every seed; "
        f"{doc['n_boot']} resamples). Δ and p: paired with clip seed by seed on the same resamples; "
        f"Holm over the {doc['multiple_testing']['counts']['tests']} comparisons "
        f"({doc['multiple_testing']['counts']['holm']} significant at 0.05 after Holm, "
        f"{doc['multiple_testing']['counts']['raw']} before). Below {doc['min_patients']} test patients "
        "there is no CI and no test.",
        "",
        "| objective | " + " | ".join(_column(doc, m) for m in keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for name, obj in doc["objectives"].items():
        vs = obj.get("vs_baseline") or {}
        cells = [cell(obj["metrics"].get(m, {}), vs.get(m)) for m in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Losses: " + "; ".join(f"{n} = `{o['loss']}`" for n, o in doc["objectives"].items()), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from sonofm.atomic import atomic_write_text
    from sonofm.demo import CAPTION_SAMPLING, DEFAULT, machine_info
    from sonofm.eval.stats import MIN_PATIENTS

    known = objectives()
    known.update({name: known[base] for name, (base, _) in RECIPE_VARIANTS.items()})
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--objectives", default=",".join(known), help=f"comma-separated, from {list(known)}")
    p.add_argument("--seeds", default="0,1,2", help="training seeds (the data set is fixed)")
    p.add_argument(
        "--data", type=Path, help="an existing simulated dataset dir (default: simulate the plan's)"
    )
    p.add_argument(
        "--work", type=Path, help="runs, data and embedding cache (default .sonofm-cache/ablation)"
    )
    p.add_argument("--out", type=Path, help="results dir (default benchmarks/results; --quick: the work dir)")
    p.add_argument("--n-boot", type=int, default=1000, help="patient resamples per CI and test")
    p.add_argument("--quick", action="store_true", help="smoke run: the demo plan at 240 images, 1 epoch")
    p.add_argument("--epochs", type=int, help="train this many epochs instead of the demo plan's")
    p.add_argument(
        "--group-by", help="a manifest column (e.g. region): group that share of the batches by it"
    )
    p.add_argument(
        "--group-fraction", type=float, help="share of the batches grouped by --group-by (demo plan's: 0.25)"
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    names = [n.strip() for n in args.objectives.split(",") if n.strip()]
    bad = [n for n in names if n not in known]
    if bad:
        p.error(f"unknown objectives {bad}; expected some of {list(known)}")
    if BASELINE not in names:  # every row is compared with it
        names.insert(0, BASELINE)
    names = [n for n in known if n in names]  # baseline first, table order
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        p.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    plan = quick_plan() if args.quick else DEFAULT
    # the recipe axes a run may move away from the demo's (recorded in the result's plan, and in
    # each run's folder name, so runs of different recipes never stand in for each other)
    changes = {"epochs": args.epochs, "group_by": args.group_by, "group_fraction": args.group_fraction}
    plan = dataclasses.replace(plan, **{k: v for k, v in changes.items() if v is not None})
    work = args.work or ROOT / ".sonofm-cache" / ("ablation-quick" if args.quick else "ablation")
    out_dir = args.out or (work if args.quick else RESULTS)

    data = args.data or work / "data"
    if not (data / "manifest.parquet").is_file():
        if args.data:
            p.error(f"--data {data}: no manifest.parquet (give a simulated dataset dir)")
        log.info("simulating %d images into %s", plan.n_images, data)
        simulate(data, plan)

    from sonofm.data.loader import open_table
    from sonofm.eval.runner import load_suite

    df = open_table(data)
    root = Path(df.attrs["root"])
    suite = load_suite(plan.suite)
    # the suite's own per-model CIs are not used (the pooled ones below replace them): skip them
    suite.n_boot = 0
    runs: dict[str, list[dict[str, Any]]] = {}
    units: dict[str, list[dict[str, list[Unit]]]] = {}
    for name in names:
        for seed in seeds:
            changes = RECIPE_VARIANTS[name][1] if name in RECIPE_VARIANTS else {}
            info = train(data, work, name, known[name], seed, dataclasses.replace(plan, **changes))
            log.info("[%s seed %d] evaluating", name, seed)
            units.setdefault(name, []).append(
                evaluate(info["model"], df, root, suite, work / "cache", f"{slug(name)}-s{seed}")
            )
            runs.setdefault(name, []).append(info)
    values, versus, multiple = analyse(units, n_boot=args.n_boot)
    doc: dict[str, Any] = {
        "benchmark": "ablation",
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["python benchmarks/ablation.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine_info(),
        "quick": bool(args.quick),
        "plan": dataclasses.asdict(plan),
        "caption_sampling": CAPTION_SAMPLING,
        "suite": suite.name,
        "seeds": seeds,
        "n_boot": args.n_boot,
        "min_patients": MIN_PATIENTS,
        "baseline": BASELINE,
        "data": {
            "dir": str(data),
            "n_images": {str(k): int(v) for k, v in df["split"].value_counts().items()},
            "n_patients": {str(k): int(v) for k, v in df.groupby("split")["patient_id"].nunique().items()},
        },
        "statistics": (
            "value: mean over seeds (and family members) of the metric, 95% bias-corrected bootstrap CI "
            "over test patients with every seed's rows pooled (sonofm.eval.stats.pooled_ci); vs_baseline: "
            "paired patient-level bootstrap against clip seed by seed (paired_pooled_test), delta CI and "
            "two-sided p; p_holm: Holm over every comparison in the table"
        ),
        "metrics": {k: {"task": t, "metric": m, "label": lab} for k, (t, m, lab) in METRICS.items()},
        "objectives": {
            name: {
                "loss": known[name],
                "runs": runs[name],
                "metrics": values[name],
                **({"vs_baseline": versus[name]} if name in versus else {}),
            }
            for name in names
        },
        "multiple_testing": multiple,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "ablation.json", json.dumps(doc, indent=2) + "\n")
    atomic_write_text(out_dir / "ablation.md", markdown(doc))
    print(markdown(doc))
    log.info("wrote %s and %s", out_dir / "ablation.json", out_dir / "ablation.md")
    return doc


if __name__ == "__main__":
    main()
