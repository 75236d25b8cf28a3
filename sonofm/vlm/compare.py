"""Generated vs retrieved (or any two systems') reports on the same test patients, with patient CIs.

Per item: BLEU-1 sufficient statistics (exact corpus BLEU on every resample), ROUGE-L,
clinical-correctness counts (both texts parsed by `sonofm.reports.parse_report`: ``clinical_f1``,
and ``clinical_f1_no_measurements`` without the measurement facts, which count only within half a
reporting step), and per-attribute correctness: for each dimension the reference states (organ,
diagnosis, shape, margin, ...), whether the generated text's parsed PRESENT tags equal the
reference's (the generated text is parsed without the region hint, which would otherwise hand it
the region's default organ). Intervals come from `sonofm.stats.metrics.bootstrap_ci` with patient
ids as groups (whole patients are resampled, never single images), and the difference between two
systems gets the same patient-level interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sonofm.reports import parse_report, study_attributes
from sonofm.stats.metrics import bootstrap_ci
from sonofm.taxonomy import DIMENSIONS
from sonofm.vlm import metrics as VM

# the attribute dimensions a report states, organ and diagnosis first (body system follows the organ)
_FIRST = ("organ", "diagnosis")
ATTRIBUTE_DIMS = (*_FIRST, *(d for d in DIMENSIONS if d not in (*_FIRST, "body_system")))


def _attrs(text: str, region: str | None) -> dict[str, set[str]]:
    if not text.strip():
        return {}
    return {k: set(v) for k, v in study_attributes(parse_report(text, region).study).items()}


def item_scores(preds: Sequence[str], refs: Sequence[str], regions: Sequence[str | None]) -> dict[str, Any]:
    """Per-item arrays every report metric below is a function of."""
    out: dict[str, Any] = {
        "bleu1": VM.bleu_stats(list(preds), list(refs), 1),
        "rougeL": VM.rouge_scores(preds, refs)["rougeL"],
        "clinical": VM.clinical_counts(preds, refs, list(regions)),
        "clinical_facts": VM.clinical_counts(preds, refs, list(regions), measurements=False),
    }
    ref_attrs = [_attrs(r, g) for r, g in zip(refs, regions, strict=True)]
    # the generated text is parsed WITHOUT the region hint: naming the organ must be its own doing
    pred_attrs = [_attrs(p, None) for p in preds]
    for dim in ATTRIBUTE_DIMS:
        ok = np.full(len(refs), np.nan)
        for i, (pa, ra) in enumerate(zip(pred_attrs, ref_attrs, strict=True)):
            want = ra.get(dim) or set()
            if want:  # scored only where the reference states this dimension
                ok[i] = float((pa.get(dim) or set()) == want)
        out[f"attr/{dim}"] = ok
    return out


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=float)
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


METRICS = {
    "bleu1": lambda a: VM.bleu_from_stats(a, 1),
    "rougeL": lambda a: float(np.mean(a)),
    "clinical_f1": VM.micro_f1,
}


def _metric_fns() -> dict[str, tuple[str, Any]]:
    fns = {"bleu1": ("bleu1", METRICS["bleu1"]), "rougeL": ("rougeL", METRICS["rougeL"])}
    fns["clinical_f1"] = ("clinical", METRICS["clinical_f1"])
    fns["clinical_f1_no_measurements"] = ("clinical_facts", METRICS["clinical_f1"])
    for dim in ATTRIBUTE_DIMS:
        fns[f"attr/{dim}"] = (f"attr/{dim}", _nanmean)
    return fns


def compare_reports(
    systems: dict[str, Sequence[str]],
    refs: Sequence[str],
    regions: Sequence[str | None],
    patients: Sequence[str],
    *,
    baseline: str,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """{metric: {system: CI dict, "delta/<system>-<baseline>": CI dict}} on the same items.

    Every CI resamples whole patients (`patients`, one id per item) and says how many it rests on.
    """
    groups = np.asarray([str(p) for p in patients])
    scored = {name: item_scores(list(p), list(refs), list(regions)) for name, p in systems.items()}
    out: dict[str, Any] = {}
    for metric, (key, fn) in _metric_fns().items():
        row: dict[str, Any] = {}
        for name, s in scored.items():
            row[name] = bootstrap_ci(fn, s[key], n_boot=n_boot, seed=seed, groups=groups).to_dict()
        base = scored[baseline][key]
        for name, s in scored.items():
            if name == baseline:
                continue
            diff = lambda a, b, fn=fn: fn(a) - fn(b)  # noqa: E731
            row[f"delta/{name}-{baseline}"] = bootstrap_ci(
                diff, s[key], base, n_boot=n_boot, seed=seed, groups=groups
            ).to_dict()
        out[metric] = row
    return out


def closed_vqa(
    systems: dict[str, Sequence[str]],
    refs: Sequence[str],
    patients: Sequence[str],
    *,
    n_boot: int = 1000,
    baseline: str | None = None,
) -> dict[str, Any]:
    """Closed-question accuracy per system with patient-level CIs; with `baseline`, also each other
    system's paired difference to it (``delta/<system>-<baseline>``: the same questions, whole
    patients resampled)."""
    groups = np.asarray([str(p) for p in patients])
    out: dict[str, Any] = {}
    ok: dict[str, np.ndarray] = {}
    for name, preds in systems.items():
        ok[name] = np.array([VM.closed_correct(p, r) for p, r in zip(preds, refs, strict=True)], dtype=float)
        out[name] = bootstrap_ci(np.mean, ok[name], n_boot=n_boot, groups=groups).to_dict()
    if baseline is not None:
        for name in systems:
            if name != baseline:
                diff = ok[name] - ok[baseline]
                out[f"delta/{name}-{baseline}"] = bootstrap_ci(
                    np.mean, diff, n_boot=n_boot, groups=groups
                ).to_dict()
    return out
