"""The suite runner behind `sonofm eval`: load suite YAML, embed once per split, run tasks, write results.

Outputs in OUT: `results.json` (metrics with 95% CIs, model and data cards, compare-mode paired
bootstrap p-values), `results.md` (tables), `report.html` (see `sonofm.eval.report`) and
`eval_log.jsonl` (one JSON event per line: embedding, task start/end with timings). OUT is
claimed like every job's output folder (`sonofm.outdir`): the same evaluation re-run redoes it
there, another one is refused unless `overwrite`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sonofm import __version__
from sonofm.atomic import atomic_write_text
from sonofm.data.loader import open_table
from sonofm.data.manifest import DatasetDir
from sonofm.errors import UserError
from sonofm.eval.report import write_html_report
from sonofm.eval.tables import results_markdown
from sonofm.eval.tasks import EvalContext, Task, TaskResult, build_task  # the package: registers the tasks
from sonofm.inference.embed import data_hash, embed_split, model_hash, pick_device, training_text_field
from sonofm.models import load_model
from sonofm.models.io import HUB_PREFIX, load_training_info, read_model_config, resolve_model_dir
from sonofm.outdir import open_output
from sonofm.stats.metrics import MetricWarning, paired_bootstrap
from sonofm.stats.patients import benjamini_hochberg, count_significant, holm

log = logging.getLogger(__name__)

Event = Callable[[dict[str, Any]], None]
SUITE_KEYS = {"name", "description", "n_boot", "seed", "bootstrap_unit", "batch_size", "tasks"}


@dataclass
class Suite:
    name: str
    tasks: list[Task]
    n_boot: int = 1000
    seed: int = 0
    bootstrap_unit: str = "patient"
    batch_size: int = 64
    description: str = ""
    source: str = ""
    raw: dict[str, Any] = field(default_factory=dict)


def list_suites() -> list[str]:
    d = resources.files("sonofm") / "presets" / "suites"
    return sorted(p.name[:-5] for p in d.iterdir() if p.name.endswith(".yaml"))


def load_suite(spec: str | Path) -> Suite:
    """A suite by preset name (`default`, `quick`) or YAML path; errors name the file and entry."""
    p = Path(spec)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        if not p.is_file():
            raise UserError(f"suite file {p} not found")
        text, source = p.read_text(encoding="utf-8"), str(p)
    else:
        if str(spec) not in list_suites():
            raise UserError(f"unknown suite {spec!r}; presets: {', '.join(list_suites())} (or a YAML path)")
        f = resources.files("sonofm") / "presets" / "suites" / f"{spec}.yaml"
        text, source = f.read_text(encoding="utf-8"), f"preset:{spec}"
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{source}: invalid YAML: {e}") from e
    if not isinstance(raw, dict) or not isinstance(raw.get("tasks"), list) or not raw["tasks"]:
        raise UserError(f"{source}: expected a mapping with a non-empty 'tasks' list")
    unknown = sorted(set(raw) - SUITE_KEYS)
    if unknown:
        raise UserError(f"{source}: unknown keys {unknown}; expected some of {sorted(SUITE_KEYS)}")
    tasks = []
    for i, entry in enumerate(raw["tasks"], start=1):
        if not isinstance(entry, dict):
            raise UserError(f"{source}: tasks[{i}] must be a mapping with a 'type'")
        tasks.append(build_task(entry, where=f"{source}: tasks[{i}]"))
    names = [t.name for t in tasks]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserError(f"{source}: duplicate task names {dup}; give each a distinct `name:`")
    unit = raw.get("bootstrap_unit", "patient")
    if unit not in ("sample", "patient"):
        raise UserError(f"{source}: bootstrap_unit must be 'sample' or 'patient', got {unit!r}")
    return Suite(
        name=str(raw.get("name", p.stem)),
        tasks=tasks,
        n_boot=int(raw.get("n_boot", 1000)),
        seed=int(raw.get("seed", 0)),
        bootstrap_unit=unit,
        batch_size=int(raw.get("batch_size", 64)),
        description=str(raw.get("description", "")),
        source=source,
        raw=raw,
    )


class JsonlLog:
    """Append-only JSONL event log (flushed per line so a crashed run still leaves its trail)."""

    def __init__(self, path: Path) -> None:
        self.fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def __call__(self, event: dict[str, Any]) -> None:
        self.fh.write(json.dumps({"time": time.time(), **event}, default=_json_default) + "\n")
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


def _json_default(v: Any) -> Any:
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def _clean(v: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy -> python."""
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, np.ndarray):
        return _clean(v.tolist())
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def default_cache_dir() -> Path:
    return Path(os.environ.get("SONOFM_CACHE_DIR", Path.home() / ".cache" / "sonofm")) / "embeddings"


@dataclass
class ModelRun:
    """One evaluated model: its identity, card, context and task results."""

    label: str
    model_dir: str
    hash: str
    card: dict[str, Any]
    ctx: EvalContext
    results: dict[str, TaskResult]
    timing: dict[str, float]


def _model_card(model_dir: str, model: Any) -> dict[str, Any]:
    card: dict[str, Any] = {"dir": str(model_dir)}
    try:
        card["config"] = read_model_config(model_dir)
    except UserError:
        card["config"] = None
    info = load_training_info(model_dir)
    if info is not None:
        card["training"] = info
    card["n_parameters"] = int(sum(p.numel() for p in model.parameters()))
    return card


def evaluate_model(
    model_dir: str,
    df: Any,
    root: Path,
    suite: Suite,
    *,
    label: str,
    cache_dir: Path | None,
    device: str | None,
    precision: str,
    workers: int,
    emit: Event,
) -> ModelRun:
    dev = pick_device(device)
    model = load_model(model_dir).to(dev).eval()
    if any(t.needs_embeddings for t in suite.tasks) and not hasattr(model, "encode_image"):
        raise UserError(
            f"{model_dir}: model type {type(model).__name__} has no encode_image; suite {suite.name!r} "
            "has embedding tasks (zero-shot, retrieval, probes) that need a dual encoder"
        )
    mhash = model_hash(model, model_dir)
    needed = sorted({s for t in suite.tasks if t.needs_embeddings for s in t.splits} & set(df["split"]))
    # only splits some task reads texts of go through the text tower (a probe's train split does not)
    text_splits = {s for t in suite.tasks if t.needs_embeddings and t.needs_texts for s in t.splits}
    # evaluate the text the model was trained to read (its training.json): captions or reports
    text_field = training_text_field(model_dir)
    embeddings = {}
    t0 = time.perf_counter()
    for split in needed:
        total = int((df["split"] == split).sum())
        emit({"event": "embed_start", "model": label, "split": split, "total": total})
        emb = embed_split(
            model,
            df,
            root,
            split,
            model_id=mhash,
            cache_dir=cache_dir,
            batch_size=suite.batch_size,
            workers=workers,
            device=dev,
            precision=precision,
            progress=lambda n, s=split: emit({"event": "embed_advance", "model": label, "split": s, "n": n}),
            text_field=text_field,
            texts=split in text_splits,
        )
        embeddings[split] = emb
        emit({"event": "embed_end", "model": label, "split": split, "n": len(emb.ids), **emb.timing})
    timing = {"embed_s": time.perf_counter() - t0}
    ctx = EvalContext(
        model=model,
        df=df,
        root=root,
        embeddings=embeddings,
        n_boot=suite.n_boot,
        seed=suite.seed,
        bootstrap_unit=suite.bootstrap_unit,
        device=dev,
        precision=precision,
    )
    results: dict[str, TaskResult] = {}
    for task in suite.tasks:
        emit({"event": "task_start", "model": label, "task": task.name})
        t1 = time.perf_counter()
        res = task.run(ctx)
        dt = time.perf_counter() - t1
        res.info["seconds"] = round(dt, 3)
        results[task.name] = res
        emit(
            {
                "event": "task_end",
                "model": label,
                "task": task.name,
                "seconds": dt,
                "skipped": res.skipped,
                "metrics": {k: v.value for k, v in res.metrics.items()},
            }
        )
        if res.skipped:
            log.info("%s: %s skipped (%s)", label, task.name, res.skipped)
    timing["tasks_s"] = time.perf_counter() - t0 - timing["embed_s"]
    return ModelRun(label, str(model_dir), mhash, _model_card(model_dir, model), ctx, results, timing)


def compare_runs(a: ModelRun, b: ModelRun, n_boot: int, seed: int) -> dict[str, dict[str, Any]]:
    """Paired-bootstrap comparison of every metric both runs computed on the same samples."""
    same_images = a.ctx.embeddings.keys() == b.ctx.embeddings.keys() and all(
        a.ctx.embeddings[s].ids == b.ctx.embeddings[s].ids for s in a.ctx.embeddings
    )
    out: dict[str, dict[str, Any]] = {}
    for name, ra in a.results.items():
        rb = b.results.get(name)
        if rb is None:
            continue
        rows: dict[str, Any] = {}
        for metric, (fn, arr_a) in ra.samples.items():
            if metric not in rb.samples:
                continue
            _, arr_b = rb.samples[metric]
            if not same_images or len(arr_a[0]) != len(arr_b[0]):
                rows[metric] = {"note": "not paired: the models were scored on different samples"}
                continue
            with warnings.catch_warnings():  # undefined-metric warnings were recorded per task already
                warnings.simplefilter("ignore", MetricWarning)
                rows[metric] = paired_bootstrap(
                    fn, arr_a, arr_b, n_boot=n_boot, seed=seed, groups=ra.groups.get(metric)
                )
            rows[metric]["higher_is_better"] = ra.higher_is_better.get(metric, True)
        if rows:
            out[name] = rows
    add_corrections(out)
    return out


def add_corrections(compare: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Holm and Benjamini-Hochberg adjusted p-values over every test of one comparison (in place).

    Each tested row gets `p_holm` and `p_bh`; returns the raw / Holm / BH counts at p < 0.05, so a
    reader sees how many of the many metric differences survive the correction.
    """
    tested = [
        r
        for rows in compare.values()
        for r in rows.values()
        if r.get("p_value") is not None and r["p_value"] == r["p_value"]
    ]
    p = np.array([r["p_value"] for r in tested], dtype=np.float64)
    for r, ph, pb in zip(tested, holm(p), benjamini_hochberg(p), strict=True):
        r["p_holm"], r["p_bh"] = float(ph), float(pb)
    return count_significant(p.tolist())


def run_suite(
    models: Sequence[str],
    data: str | Path,
    out: str | Path,
    suite: str | Path | Suite = "default",
    *,
    device: str | None = None,
    precision: str = "fp32",
    cache_dir: str | Path | None | bool = None,
    n_boot: int | None = None,
    workers: int = 0,
    html: bool = True,
    on_event: Event | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Evaluate one model (or compare several: each against the first) and write OUT's files.

    cache_dir: None = `$SONOFM_CACHE_DIR/embeddings` (default ~/.cache/sonofm/embeddings),
    False = no cache. Returns the results.json document.

    OUT follows the output-folder rule (`sonofm.outdir`): the same evaluation (models, data,
    suite, n_boot, precision) re-run into it redoes it there; another one is refused before
    anything is written, unless `overwrite` (then OUT is replaced).
    """
    if not models:
        raise UserError("give at least one --model")
    s = suite if isinstance(suite, Suite) else load_suite(suite)
    if n_boot is not None:
        s.n_boot = int(n_boot)
    out = Path(out)
    settings = eval_settings(models, data, s, precision)
    claim = open_output(
        out,
        job="eval",
        settings=settings,
        overwrite=overwrite,
        options="the same --model, --data, --suite, --n-boot and --precision to redo it",
        legacy_same=_same_legacy_eval(out, settings),
    )
    df = open_table(data)  # a dataset dir, manifest or shard directory
    root = Path(df.attrs["root"])
    cache = None if cache_dir is False else Path(cache_dir) if cache_dir else default_cache_dir()
    for m in models:  # a missing or non-model folder fails here, before OUT is touched
        if not str(m).startswith(HUB_PREFIX):
            read_model_config(resolve_model_dir(m))
    claim.commit()  # every option is valid: only now is OUT created (or cleared, for overwrite)
    jlog = JsonlLog(out / "eval_log.jsonl")

    def emit(ev: dict[str, Any]) -> None:
        jlog(ev)
        if on_event is not None:
            on_event(ev)

    labels = _labels(models)
    t0 = time.perf_counter()
    try:
        emit({"event": "start", "suite": s.name, "models": list(models), "data": str(data)})
        runs = [
            evaluate_model(
                m,
                df,
                root,
                s,
                label=lab,
                cache_dir=cache,
                device=device,
                precision=precision,
                workers=workers,
                emit=emit,
            )
            for m, lab in zip(models, labels, strict=True)
        ]
        compare, corrections = {}, {}
        for other in runs[1:]:
            emit({"event": "compare", "a": runs[0].label, "b": other.label})
            pair = f"{runs[0].label} vs {other.label}"
            compare[pair] = compare_runs(runs[0], other, s.n_boot, s.seed)
            corrections[pair] = add_corrections(compare[pair])
        doc = {
            "sonofm_version": _version(),
            "suite": {
                "name": s.name,
                "source": s.source,
                "n_boot": s.n_boot,
                "seed": s.seed,
                "bootstrap_unit": s.bootstrap_unit,
                "tasks": s.raw.get("tasks"),
            },
            "data": {
                "dir": str(root),
                "hash": data_hash(df, root, image_size=0),
                "n_images": {k: int(v) for k, v in df["split"].value_counts().items()},
                "n_patients": {k: int(v) for k, v in df.groupby("split")["patient_id"].nunique().items()},
                "card": DatasetDir.read_card(root),
            },
            "models": [
                {
                    "label": r.label,
                    "dir": r.model_dir,
                    "hash": r.hash,
                    "card": r.card,
                    "timing": r.timing,
                    "tasks": {n: t.to_dict() for n, t in r.results.items()},
                }
                for r in runs
            ],
            "compare": compare,
            # raw / Holm / Benjamini-Hochberg counts of differences at p < 0.05, per comparison
            "multiple_testing": {"alpha": 0.05, "methods": ["holm", "bh"], "counts": corrections},
            "seconds": time.perf_counter() - t0,
        }
        doc = _clean(doc)
        atomic_write_text(out / "results.json", json.dumps(doc, indent=2, default=_json_default) + "\n")
        atomic_write_text(out / "results.md", results_markdown(doc))
        if html:
            write_html_report(out / "report.html", doc, runs)
        emit({"event": "done", "out": str(out), "seconds": time.perf_counter() - t0})
    finally:
        jlog.close()
    return doc


EVAL_OUTPUTS = ("results.json", "results.md", "report.html", "eval_log.jsonl")


def eval_settings(models: Sequence[str], data: str | Path, suite: Suite, precision: str) -> dict[str, Any]:
    """What makes two evaluations the same one (the output folder's fingerprint).

    Paths are resolved, so the same folders named differently are the same evaluation; the
    device, workers, cache and HTML switch do not change the numbers and are left out.
    """
    return {
        "models": [_model_key(m) for m in models],
        "data": str(Path(data).expanduser().resolve()),
        "suite": {
            "name": suite.name,
            "n_boot": suite.n_boot,
            "seed": suite.seed,
            "bootstrap_unit": suite.bootstrap_unit,
            "tasks": suite.raw.get("tasks") or [t.name for t in suite.tasks],
        },
        "precision": precision,
    }


def _model_key(model: str | Path) -> str:
    """A model as the fingerprint names it: a hub id as given, a folder by its resolved path."""
    m = str(model)
    return m if m.startswith(HUB_PREFIX) else str(Path(m).expanduser().resolve())


def _same_legacy_eval(out: Path, settings: dict[str, Any]) -> bool:
    """Is a folder written before job records existed this same evaluation?

    Only eval outputs in it, and either no results.json (an interrupted run: its append-only log
    is all there is, nothing to lose) or a results.json of the same models, data and suite.
    """
    if not out.is_dir() or not all(p.name in EVAL_OUTPUTS for p in out.iterdir()):
        return False
    path = out / "results.json"
    if not path.is_file():
        return True
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        suite = doc["suite"]
        models = [_model_key(m["dir"]) for m in doc["models"]]
        data = str(Path(doc["data"]["dir"]).expanduser().resolve())
    except (OSError, ValueError, KeyError, TypeError):
        return False
    want = settings["suite"]
    return (
        models == settings["models"]
        and data in (settings["data"], str(Path(settings["data"]).parent))  # a manifest file's folder
        and all(suite.get(k) == want[k] for k in ("name", "n_boot", "seed", "bootstrap_unit", "tasks"))
    )


def _label(model: str) -> str:
    """A model's short name: its directory, or the run's name for a run's `model/` folder."""
    p = Path(model)
    if p.name == "model" and p.parent.name:
        return p.parent.name
    return p.name or str(model)


def _labels(models: Sequence[str]) -> list[str]:
    """Short unique labels for models (run or directory names, de-duplicated with their parents)."""
    labs = [_label(m) for m in models]
    if len(set(labs)) < len(labs):
        labs = ["/".join(Path(m).parts[-2:]) for m in models]
    if len(set(labs)) < len(labs):
        labs = [f"{lab}#{i}" for i, lab in enumerate(labs)]
    return labs


def _version() -> str:
    return __version__
