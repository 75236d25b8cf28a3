"""The demo's `report.html`: one self-contained page a newcomer wants to read.

Sections: what ran (plan, stage timings, machine) -> the data (contact sheet of simulated images
with mask outlines, counts per region and split) -> training (loss terms and validation retrieval
of both runs, from their `metrics.jsonl`) -> a plain-language reading of the results, generated
from the numbers (who wins where, by how much, whether the paired bootstrap calls it significant,
caveats) -> the headline table -> the evaluation report of both models (side-by-side tables,
ROC curves, confusion matrices, retrieval examples, t-SNE maps) inlined from `eval/report.html`.

Every image is an inline PNG data URI and there is no JavaScript, so the file opens offline.
The numbers and their reading live in `sonofm.demo_reading`, the figures and inlined sections in
`sonofm.demo_figures`; this module lays out the page (and re-exports every name it had).
"""

from __future__ import annotations

import html
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sonofm.atomic import atomic_write_text
from sonofm.data.manifest import read_manifest
from sonofm.demo_figures import (  # noqa: F401 (re-exported)
    _data_uri_file,
    _plt,
    data_section,
    eval_body,
    training_figures,
)
from sonofm.demo_reading import (  # noqa: F401 (re-exported)
    ALPHA,
    _chance,
    _chance_sentence,
    _fmt,
    _patients_text,
    _pfmt,
    _value,
    expand_headline,
    headline_rows,
    reading,
)
from sonofm.figures import CSS, figure_html
from sonofm.stats.metrics import MIN_PATIENTS
from sonofm.stats.reading import model_alerts, patients_phrase

log = logging.getLogger(__name__)

EXTRA_CSS = """
.lead{font-size:1.05em;line-height:1.5;max-width:60em}.reading li{margin:.35em 0;line-height:1.45}
.sheet{max-width:100%;border:1px solid #ccc}.legend span{display:inline-block;margin:0 .8em .3em 0;
font-size:.85em}.legend i{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:-1px;
border:1px solid #888}.win{font-weight:600}.sig{color:#167a2c}.ns{color:#777}
.warn{color:#b02a2a;font-weight:600}
.caveat{background:#fff8e1;border-left:4px solid #f0b400;padding:.6em 1em;max-width:60em}
.evalsec{border-top:3px solid #ddd;margin-top:2em}
nav a{margin-right:1em}
"""


# ------------------------------------------------------------------ page
def _headline_table(rows: list[dict[str, Any]], names: tuple[str, str]) -> str:
    def cell(v: float | None, ci: Any, k: int | None) -> str:
        out = _fmt(v)
        if ci:
            out += f" <span class='meta'>[{_fmt(ci[0])}, {_fmt(ci[1])}]</span>"
        if k is not None:
            out += f" <span class='meta'>({patients_phrase(k)})</span>"
        return out

    body = []
    for r in rows:
        a, b = (r["values"] + [None, None])[:2]
        ca, cb = (r["cis"] + [None, None])[:2]
        ka, kb = (r.get("n_patients", []) + [None, None])[:2]
        better = None
        if a is not None and b is not None and _fmt(a) != _fmt(b):
            better = 1 if (b > a) == r["higher_is_better"] else 0
        cells = [cell(a, ca, ka), cell(b, cb, kb)]
        if better is not None:
            cells[better] = f"<span class='win'>{cells[better]}</span>"
        p = r.get("p_value")
        if r.get("untestable"):
            p_txt = html.escape(r["untestable"])
        elif p is not None:
            p_txt = _pfmt(p) + (
                f" <span class='meta'>(Holm {_pfmt(r['p_holm'])})</span>"
                if r.get("p_holm") is not None
                else ""
            )
        else:
            p_txt = "per tag below" if r.get("family_sig") else "n/a"
        arrow = "&uarr;" if r["higher_is_better"] else "&darr;"
        body.append(
            f"<tr><td>{html.escape(r['label'])} {arrow}</td><td>{_fmt(r.get('chance'))}</td>"
            f"<td>{cells[0]}</td><td>{cells[1]}</td><td>{_fmt(r['delta'])}</td><td>{p_txt}</td></tr>"
        )
    return (
        f"<table><tr><th>metric (&uarr; higher is better)</th><th>chance</th><th>{html.escape(names[0])}</th>"
        f"<th>{html.escape(names[1])}</th><th>delta (B &minus; A)</th><th>paired bootstrap p</th></tr>"
        + "".join(body)
        + "</table>"
    )


def data_phrase(data: Path, n_images: int | None) -> str:
    """What was simulated, counted from the manifest (regions and echo views are not hard-coded)."""
    try:
        df = read_manifest(data)
    except Exception as e:  # the report must render without the data directory
        log.warning("cannot read manifest of %s (%s)", data, e)
        return f"{n_images or 'the'} ultrasound images"
    regions = sorted({str(r) for r in df["region"].dropna()})
    views = sorted({str(v) for v in df["view"].dropna()}) if "view" in df.columns else []
    text = (
        f"{len(df)} ultrasound images of {df['patient_id'].nunique()} patients over {len(regions)} body "
        f"regions ({', '.join(regions)})"
    )
    if views:
        text += f", with {len(views)} echocardiography views"
    return text


def build_demo_report(
    out: Path,
    *,
    results: dict[str, Any],
    headline: Sequence[tuple[str, str, str]],
    plan: dict[str, Any],
    stages: dict[str, Any],
    machine: dict[str, Any],
    runs: dict[str, Path],
    names: tuple[str, str],
) -> str:
    """The demo report's HTML (see the module docstring for its sections)."""
    out = Path(out)
    rows = headline_rows(results, headline)
    n_images = results.get("data", {}).get("n_images", {})
    models = results.get("models", [])
    steps = {
        name: int(info["steps"])
        for name, info in stages.items()
        if name.startswith("pretrain-") and "steps" in info
    }
    steps = {k.removeprefix("pretrain-"): v for k, v in steps.items()}
    counts = results.get("multiple_testing", {}).get("counts", {})
    findings, caveats = reading(
        rows,
        names,
        n_test=n_images.get("test"),
        n_test_patients=results.get("data", {}).get("n_patients", {}).get("test"),
        n_params=(models[0].get("card", {}).get("n_parameters") if models else None),
        steps=steps,
        n_images=sum(n_images.values()) or None,
        multiple_testing=next(iter(counts.values()), None),
        alerts={name: model_alerts(m) for name, m in zip(names, models, strict=False)},
        preset=str(plan.get("model", "tiny")),
        n_boot=results.get("suite", {}).get("n_boot"),
    )
    total_s = sum(float(v.get("seconds", 0)) for v in stages.values())
    stage_txt = ", ".join(f"{html.escape(k)} {float(v.get('seconds', 0)):.0f} s" for k, v in stages.items())
    mach = ", ".join(f"{html.escape(str(k))}: {html.escape(str(v))}" for k, v in machine.items())
    body = [
        "<h1>sonofm demo: plain CLIP vs an ultrasound-aware model</h1>",
        '<nav><a href="#reading">reading</a><a href="#headline">headline numbers</a><a href="#data">data</a>'
        '<a href="#training">training</a><a href="#eval">full evaluation</a></nav>',
        f"<p class='lead'>This run simulated {data_phrase(out / 'data', sum(n_images.values()) or None)} "
        f"({plan.get('image_size')} px), pretrained two "
        f"image-text models with the same small architecture and budget ({plan.get('epochs')} epochs): "
        f"<b>{html.escape(names[0])}</b>, the plain CLIP contrastive baseline, and "
        f"<b>{html.escape(names[1])}</b>, "
        "which adds ultrasound-aware objectives (soft labels from report similarity, a semantic loss, the "
        "attribute graph, view-aware and negation-aware terms, supervised heads on the region, view and "
        "attribute labels, and each image contrasted with the texts of its organ, view and lesion tags), "
        "then evaluated both on the same held-out "
        "test images with the same suite.</p>",
        f"<p class='meta'>Stages: {stage_txt} (total {total_s / 60:.1f} min). Machine: {mach}.</p>",
        "<h2 id='reading'>What the numbers say</h2>",
        "<ul class='reading'>" + "".join(f"<li>{f}</li>" for f in findings) + "</ul>",
        "<div class='caveat'><b>Caveats.</b><ul>" + "".join(f"<li>{c}</li>" for c in caveats) + "</ul></div>",
        "<h2 id='headline'>Headline numbers (test split, 95% bootstrap CIs over patients)</h2>",
        _headline_table(rows, names),
        "<p class='meta'>Bold marks the better model. Chance is what random guessing scores (1/classes for "
        "accuracy, 0.5 for AUC, about 1/gallery for R@1). Intervals and p resample whole test patients "
        "(both models on the same resamples); each interval shows the patients it rests on, and "
        f"below {MIN_PATIENTS} patients nothing is tested. p is two-sided, with Holm's correction over "
        "every metric compared. Family rows (AUC means) average per-dimension AUCs; the per-tag tests are "
        "in the comparison table of the full evaluation.</p>",
        data_section(out / "data"),
        "<h2 id='training'>Training</h2>",
    ]
    figs = training_figures(runs)
    if figs:
        body.append('<div class="figs wide">' + "".join(figure_html(s, c) for s, c in figs) + "</div>")
    else:
        body.append("<p>No training logs were found.</p>")
    body.append("<section class='evalsec'><h2 id='eval'>Full evaluation</h2>")
    body.append(eval_body(out / "eval" / "report.html"))
    body.append("</section>")
    css = CSS + EXTRA_CSS + ".wide img{max-width:100%}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,"><title>sonofm demo report</title>'
        f"<style>{css}</style></head><body>{''.join(body)}</body></html>\n"
    )


def write_demo_report(out: Path, **kwargs: Any) -> Path:
    """Write OUT/report.html atomically; returns its path."""
    path = Path(out) / "report.html"
    atomic_write_text(path, build_demo_report(Path(out), **kwargs))
    return path
