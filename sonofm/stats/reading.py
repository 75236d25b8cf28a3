"""Plain-words sentences about one model's results, shared by the eval report and the demo report.

Why one place: every sentence a reader sees must follow from the numbers beside it, and the
tests (tests/eval/test_reading.py) check each rule on constructed results: a collapsed model, a
below-chance model, a single-patient split, a clearly better model. Inputs are results.json
task documents (`{"metrics": {name: {value, ci_low, ci_high, n, n_patients}}, "info": {...}}`).
"""

from __future__ import annotations

import html
import math
from typing import Any

from sonofm.stats.health import chance_relation
from sonofm.stats.metrics import MIN_PATIENTS


def fmt(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def patients_phrase(k: int | None) -> str:
    return "" if k is None else f"{k} patient{'s' if k != 1 else ''}"


def _num(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def ci_text(m: dict[str, Any] | None) -> str:
    """ "0.512 [0.401, 0.623] (12 patients)"; "2.000 (1 patient: no interval)" when there is none."""
    if not m or _num(m.get("value")) is None:
        return "n/a"
    lo, hi, k = _num(m.get("ci_low")), _num(m.get("ci_high")), m.get("n_patients")
    out = fmt(m["value"])
    if lo is not None and hi is not None:
        out += f" [{fmt(lo)}, {fmt(hi)}]"
    if k is not None:
        out += f" ({patients_phrase(k)}{': no interval' if k < 2 else ''})"
    return out


def _macro_auc_alert(task: str, m: dict[str, Any] | None) -> str | None:
    if not m or m.get("value") is None:
        return None
    rel = chance_relation(m["value"], m.get("ci_low"), m.get("ci_high"), 0.5)
    if rel != "below":
        return None
    return (
        f"{task}: the macro AUC is {ci_text(m)}, below chance (0.5) with its whole 95% interval: the "
        "scores rank the classes the wrong way round (anti-correlated with the truth), which is "
        "worse than guessing, not merely uninformative."
    )


def _collapse_alert(task: str, health: dict[str, Any] | None) -> str | None:
    if not health or not health.get("collapsed"):
        return None
    return (
        f"{task}: the predictions collapsed: {100 * health['majority_share']:.0f}% of the "
        f"{health['n']} test images are predicted '{health['majority_class']}', a class that is "
        f"{100 * health['majority_true_share']:.0f}% of the true labels; only "
        f"{health['n_predicted_classes']} of {health['n_classes']} classes are ever predicted "
        f"(prediction entropy {health['entropy']:.2f}, where 1 is an even spread). Its accuracy "
        "says how common that class is, not what the model recognises."
    )


def task_alerts(task: str, doc: dict[str, Any]) -> list[str]:
    """Warnings about one task of one model, in plain words (plain text; escape before HTML)."""
    if not doc or doc.get("skipped"):
        return []
    info, metrics = doc.get("info", {}) or {}, doc.get("metrics", {}) or {}
    found = (_collapse_alert(task, info.get("health")), _macro_auc_alert(task, metrics.get("macro_auc")))
    out = [a for a in found if a]
    few = sorted(
        {
            int(m["n_patients"])
            for m in metrics.values()
            if isinstance(m, dict) and m.get("n_patients") is not None and m["n_patients"] < MIN_PATIENTS
        }
    )
    if few:
        k = few[0]
        out.append(
            f"{task}: some numbers rest on only {patients_phrase(k)} of the test split "
            f"(fewer than {MIN_PATIENTS}): read them as anecdotes; no difference on them is tested"
            + (" and one patient gives no interval at all." if k < 2 else ".")
        )
    widened = sorted(
        name for name, m in metrics.items() if isinstance(m, dict) and "widened" in str(m.get("note", ""))
    )
    if widened:
        out.append(
            f"{task}: the bootstrap of {', '.join(widened)} lies almost entirely on one side of the "
            "estimate (a statistic strongly biased on this small sample); its interval was widened to "
            "include the estimate."
        )
    unseen = info.get("test_unseen_classes")
    if unseen:
        names = ", ".join(f"{c} ({k})" for c, k in sorted(unseen.items()))
        out.append(f"{task}: test images of classes absent from training were left out: {names}.")
    return out


def model_alerts(model_doc: dict[str, Any]) -> list[str]:
    """Every task's alerts for one results.json model entry."""
    return [a for name, t in model_doc.get("tasks", {}).items() for a in task_alerts(name, t)]


def alerts_html(alerts: list[str]) -> str:
    """A warning box listing alerts (empty string when there are none)."""
    if not alerts:
        return ""
    items = "".join(f"<li>{html.escape(a)}</li>" for a in alerts)
    return f"<div class='alert'><b>Read with care.</b><ul>{items}</ul></div>"
