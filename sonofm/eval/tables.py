"""results.json -> results.md: one table per task (value [95% CI]), and compare-mode tables."""

from __future__ import annotations

from typing import Any

from sonofm.stats.metrics import MIN_PATIENTS
from sonofm.stats.reading import ci_text


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _ci(m: dict[str, Any]) -> str:
    """Value [95% CI] (k patients): every interval says how many patients it rests on."""
    return ci_text(m)


def _p(p: Any) -> str:
    if p is None:
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def results_markdown(doc: dict[str, Any]) -> str:
    """Readable tables of a results.json document (single model or compare mode)."""
    models = doc["models"]
    lines = [f"# sonofm evaluation: suite `{doc['suite']['name']}`", ""]
    data = doc["data"]
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(data["n_images"].items()))
    lines += [f"- data: `{data['dir']}` ({counts}); hash `{data['hash'][:12]}`"]
    for m in models:
        lines.append(f"- model `{m['label']}`: `{m['dir']}`, hash `{m['hash'][:12]}`")
    lines += [
        f"- {doc['suite']['n_boot']} bootstrap resamples per metric "
        f"(unit: {doc['suite']['bootstrap_unit']}); "
        "values are point estimates with 95% bias-corrected bootstrap CIs (and the patients they rest on).",
        "",
    ]
    task_names = list(dict.fromkeys(t for m in models for t in m["tasks"]))
    for task in task_names:
        lines += [f"## {task}", ""]
        entries = [m["tasks"].get(task, {}) for m in models]
        skipped = [e.get("skipped") for e in entries]
        if all(skipped):
            lines += [f"Skipped: {skipped[0]}", ""]
            continue
        metric_names = list(dict.fromkeys(k for e in entries for k in e.get("metrics", {})))
        header = "| metric | " + " | ".join(m["label"] for m in models) + " |"
        lines += [header, "|---" * (len(models) + 1) + "|"]
        for name in metric_names:
            cells = [_ci(e["metrics"][name]) if name in e.get("metrics", {}) else "-" for e in entries]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    for pair, tasks in doc.get("compare", {}).items():
        a, b = pair.split(" vs ", 1)
        lines += [f"## Compare: {pair} (paired bootstrap)", ""]
        lines += [
            f"| task | metric | {a} | {b} | delta | patients | p | p (Holm) | p (BH) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for task, rows in tasks.items():
            for metric, r in rows.items():
                if "note" in r:
                    lines.append(f"| {task} | {metric} | - | - | - | - | {r['note']} | | |")
                    continue
                p = r.get("untestable") or _p(r.get("p_value"))
                lines.append(
                    f"| {task} | {metric} | {_fmt(r['a'])} | {_fmt(r['b'])} | {_fmt(r['delta'])} | "
                    f"{_fmt(r.get('n_patients'))} | {p} | {_p(r.get('p_holm'))} | {_p(r.get('p_bh'))} |"
                )
        lines += ["", multiple_testing_sentence(doc, pair), ""]
    return "\n".join(lines)


def multiple_testing_sentence(doc: dict[str, Any], pair: str) -> str:
    """How many differences are significant raw, after Holm and after Benjamini-Hochberg."""
    mt = doc.get("multiple_testing", {})
    c = mt.get("counts", {}).get(pair)
    if not c:
        return ""
    alpha = mt.get("alpha", 0.05)
    expected = c["tests"] * alpha
    return (
        f"{c['tests']} differences were tested: {c['raw']} have p < {alpha} before correction (about "
        f"{expected:.1f} would by chance alone if the models were equal); {c['holm']} remain after Holm's "
        f"correction (family-wise error) and {c['bh']} after Benjamini-Hochberg (false discovery rate). "
        f"A metric resting on fewer than {MIN_PATIENTS} test patients is not tested."
    )
