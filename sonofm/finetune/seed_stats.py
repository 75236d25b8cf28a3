"""Test statistics over the seeds of a fine-tuning job: stored predictions, pooled patient CIs.

Each seed stores its test predictions (`save_predictions`: numeric arrays and row ids, no
pickle); `load_seed_samples` turns them back into per-sample metric inputs with the patient of
each row; `summarise` reports per metric the mean over seeds and a patient-level bootstrap CI of
the pooled seeds (`sonofm.stats.patients`); `format_ci` prints one. Classes of the task the test
split lacks are named by `missing_test_classes`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sonofm.atomic import atomic_write
from sonofm.models.io import read_model_config
from sonofm.stats.patients import PatientPool, pooled_ci
from sonofm.tasks.base import FinetuneTask, get_task

if TYPE_CHECKING:
    from sonofm.finetune.job import FinetuneConfig

log = logging.getLogger(__name__)

PREDICTIONS = "test_predictions.npz"
N_BOOT = 1000  # patient resamples behind each pooled test CI
ROW_ID = "_row_id"


def task_classes(task: FinetuneTask, rows: pd.DataFrame) -> set[str]:
    """The task's class labels present in `rows` (empty for tasks without classes)."""
    strata = task.strata(rows)
    if strata is None:
        return set()
    return {str(v) for v in strata if v is not None and v == v}


def missing_test_classes(task: FinetuneTask, df: pd.DataFrame, config: FinetuneConfig) -> list[str] | None:
    """Classes of the task (its fixed list and every labelled row) that the test split lacks.

    None for tasks without classes. Their recall, AUC and confusion-matrix rows cannot be
    measured, so a reader must know they are absent rather than read a macro average as complete.
    """
    sel = task.select(df)
    if task.strata(sel) is None:
        return None
    known = task_classes(task, sel) | {str(c) for c in task.options.get("classes") or []}
    return sorted(known - task_classes(task, sel[sel["split"] == config.data.test_split]))


def save_predictions(path: Path, preds: dict[str, Any], rows: pd.DataFrame) -> bool:
    """Store a seed's test predictions (numeric arrays and row ids, no pickle) for the pooled CIs.

    Tasks whose predictions are ragged lists (detection boxes) have no per-sample metric form
    and are not stored; returns whether the file was written.
    """
    arrays = {k: v for k, v in preds.items() if isinstance(v, np.ndarray) and v.dtype != object}
    if len(arrays) != len(preds) or ROW_ID in preds:
        return False
    ids = {ROW_ID: np.asarray(rows["id"].astype(str).tolist(), dtype=str)}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays, **ids)

    atomic_write(path, write)
    return True


def load_seed_samples(
    seed_dir: Path, result: dict[str, Any], config: FinetuneConfig, df: pd.DataFrame
) -> dict[str, tuple[Any, tuple[np.ndarray, ...], np.ndarray]] | None:
    """metric -> (fn, per-sample arrays, patient ids) of one finished seed, or None (nothing stored).

    The seed's own task (its class list is in its result or model config) rebuilds the metric
    functions, so seeds with different class lists pool correctly.
    """
    path = seed_dir / PREDICTIONS
    if not path.is_file():
        return None
    options = result.get("task_options")
    if options is None:
        options = read_model_config(seed_dir / "model").get("task_options", {})
    task = get_task(config.task, **options)
    with np.load(path, allow_pickle=False) as z:
        preds = {k: z[k] for k in z.files if k != ROW_ID}
        ids = [str(i) for i in z[ROW_ID]]
    table = df.assign(_id=df["id"].astype(str)).drop_duplicates("_id").set_index("_id")
    missing = [i for i in ids if i not in table.index]
    if missing:
        log.warning(
            "%s: %d stored test rows are not in the data (e.g. %s); no pooled CI",
            path,
            len(missing),
            missing[0],
        )
        return None
    rows = table.loc[ids].reset_index(drop=True)
    patients = rows["patient_id"].astype(str).to_numpy()
    return {name: (fn, arrays, patients) for name, (fn, arrays, _) in task.metric_fns(preds, rows).items()}


def _finite(v: Any) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


def summarise(
    per_seed: list[dict[str, Any]],
    split: str = "test",
    samples: list[dict[str, Any] | None] | None = None,
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """name -> {mean, ci_low, ci_high, n_patients, n_seeds, values, note} over the seeds.

    `mean` is the mean over seeds of each seed's metric (NaN/None values skipped). With
    `samples` (per seed: `load_seed_samples`), metrics with a per-sample form get a patient-level
    bootstrap CI of the pooled seeds (`sonofm.stats.patients.pooled_ci`: whole patients resampled, no
    CI below MIN_PATIENTS); the others say why they have none.
    """
    names = sorted({k for r in per_seed for k in r.get(split, {})})
    n_pat = sorted({int(r.get("n_patients", {}).get(split, 0)) for r in per_seed})
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        vals = [r[split].get(name) for r in per_seed]
        ok = [float(v) for v in vals if v is not None and np.isfinite(v)]
        entry: dict[str, Any] = {
            "mean": float(np.mean(ok)) if ok else None,
            "ci_low": None,
            "ci_high": None,
            "n_patients": n_pat[0] if len(n_pat) == 1 else None,
            "n_seeds": len(ok),
            "values": vals,
        }
        units = [s.get(name) if s else None for s in (samples or [])]
        if samples is None:
            entry["note"] = "no CI (per-seed values only)"
        elif not units or any(u is None for u in units):
            no_form = all(s is not None and name not in s for s in samples)
            entry["note"] = (
                "no per-sample form: no CI"
                if no_form
                else "not every seed has stored test predictions: no CI"
            )
        else:
            ci = pooled_ci(PatientPool(units), n_boot=n_boot, seed=seed)
            entry.update(
                mean=_finite(ci.value),
                ci_low=_finite(ci.low),
                ci_high=_finite(ci.high),
                n_patients=ci.n_patients,
            )
            entry["n_rows"] = ci.n
            if ci.note:
                entry["note"] = ci.note
        out[name] = entry
    return out


def format_ci(entry: dict[str, Any], digits: int = 4) -> str:
    """`0.8123 [0.7012, 0.9001] (23 test patients, 3 seeds)`, or the value and why it has no CI."""
    if entry.get("mean") is None:
        return "n/a"
    text = f"{entry['mean']:.{digits}f}"
    if entry.get("ci_low") is not None and entry.get("ci_high") is not None:
        text += f" [{entry['ci_low']:.{digits}f}, {entry['ci_high']:.{digits}f}]"
    k, n = entry.get("n_patients"), int(entry.get("n_seeds") or 0)
    who = ([] if k is None else [f"{k} test patient{'s' if k != 1 else ''}"]) + [
        f"{n} seed{'s' if n != 1 else ''}"
    ]
    note = f"; {entry['note']}" if entry.get("note") else ""
    return f"{text} ({', '.join(who)}{note})"
