"""The fine-tuning job's report.html: pooled test metrics with their CIs, then each seed's
tables and figures (self-contained: no JavaScript, images inlined)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from sonofm.atomic import atomic_write_text
from sonofm.figures import CSS


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def _fmt_ci(entry: dict[str, Any]) -> str:
    if entry.get("ci_low") is None or entry.get("ci_high") is None:
        return html.escape(str(entry.get("note") or "no CI"))
    return f"[{_fmt(entry['ci_low'])}, {_fmt(entry['ci_high'])}]"


def write_report(path: Path, summary: dict[str, Any], per_seed: list[dict[str, Any]]) -> Path:
    """Self-contained HTML (no JavaScript, images inlined): summary table, per-seed tables, figures."""
    title = f"sonofm finetune: {summary['task']} / {summary['adapter']}"
    body = [f"<h1>{html.escape(title)}</h1>"]
    body.append(
        f'<p class="meta">model <code>{html.escape(summary["model"])}</code>; data '
        f"<code>{html.escape(summary['data'])}</code>; label fraction {summary['fraction']:g} "
        f"(of training patients); seeds {summary['seeds']}; primary metric "
        f"{html.escape(summary['primary_metric'])} ({'higher' if summary['higher_is_better'] else 'lower'}"
        " is better)</p>"
    )
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{_fmt(v['mean'])}</td><td>{_fmt_ci(v)}</td>"
        f"<td>{'n/a' if v.get('n_patients') is None else v['n_patients']}</td>"
        f"<td>{', '.join(_fmt(x) for x in v['values'])}</td></tr>"
        for k, v in summary["test"].items()
    )
    missing = summary.get("missing_classes")
    stats = summary.get("statistics", {})
    body.append(
        "<h2>Test metrics (seeds pooled, 95% CI over test patients)</h2>"
        f'<p class="meta">Each CI resamples whole test patients ({stats.get("n_boot", "n/a")} resamples), '
        "each bringing its rows from every seed; the value is the mean over seeds. Below "
        f"{stats.get('min_patients', 'n/a')} test patients no CI is given and no difference may be "
        "called significant.</p>"
        + (
            f'<p class="meta">Classes with no test rows (not measured): {html.escape(", ".join(missing))}</p>'
            if missing
            else ""
        )
        + "<table><tr><th>metric</th><th>value</th><th>95% CI</th><th>test patients</th>"
        f"<th>per seed</th></tr>{rows}</table>"
    )
    for res in per_seed:
        body.append(f"<h2>Seed {res['seed']}</h2>")
        p = res.get("parameters", {})
        body.append(
            f'<p class="meta">best epoch {res.get("best_epoch")} of {res.get("epochs")}; '
            f"trainable parameters {p.get('trainable', 'n/a')} of {p.get('total', 'n/a')}; "
            f"images {res.get('n_images')}; patients {res.get('n_patients')}; model "
            f"<code>{html.escape(str(res.get('model_dir')))}</code></p>"
        )
        if res.get("missing_train_classes"):
            lacks = ", ".join(res["missing_train_classes"])
            body.append(
                f'<p class="meta">Its training rows had no {html.escape(lacks)} '
                "(those test rows count as errors).</p>"
            )
        val, test = res.get("val", {}), res.get("test", {})
        names = sorted({n.removeprefix("val/") for n in val} | set(test))
        trs = "".join(
            f"<tr><td>{html.escape(n)}</td><td>{_fmt(val.get('val/' + n))}</td>"
            f"<td>{_fmt(test.get(n))}</td></tr>"
            for n in names
        )
        body.append(f"<table><tr><th>metric</th><th>val</th><th>test</th></tr>{trs}</table>")
        figs = res.get("figures") or []
        if figs:
            body.append(
                '<div class="figs">'
                + "".join(
                    f'<figure><img src="{src}" alt="{html.escape(cap)}">'
                    f"<figcaption>{html.escape(cap)}</figcaption></figure>"
                    for src, cap in figs
                )
                + "</div>"
            )
    doc = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="icon" href="data:,"><title>{html.escape(title)}</title><style>{CSS}</style></head>'
        f"<body>{''.join(body)}</body></html>\n"
    )
    return atomic_write_text(path, doc)
