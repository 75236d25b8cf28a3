"""The demo's `report.html`: one self-contained page a newcomer wants to read.

Sections: what ran (plan, stage timings, machine) -> the data (contact sheet of simulated images
with mask outlines, counts per region and split) -> training (loss terms and validation retrieval
of both runs, from their `metrics.jsonl`) -> a plain-language reading of the results, generated
from the numbers (who wins where, by how much, whether the paired bootstrap calls it significant,
caveats) -> the headline table -> the evaluation report of both models (side-by-side tables,
ROC curves, confusion matrices, retrieval examples, t-SNE maps) inlined from `eval/report.html`.

Every image is an inline PNG data URI and there is no JavaScript, so the file opens offline.
"""

from __future__ import annotations

import html
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sonofm.atomic import atomic_write_text

log = logging.getLogger(__name__)

ALPHA = 0.05
EXTRA_CSS = """
.lead{font-size:1.05em;line-height:1.5;max-width:60em}.reading li{margin:.35em 0;line-height:1.45}
.sheet{max-width:100%;border:1px solid #ccc}.legend span{display:inline-block;margin:0 .8em .3em 0;
font-size:.85em}.legend i{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:-1px;
border:1px solid #888}.win{font-weight:600}.sig{color:#167a2c}.ns{color:#777}
.caveat{background:#fff8e1;border-left:4px solid #f0b400;padding:.6em 1em;max-width:60em}
.evalsec{border-top:3px solid #ddd;margin-top:2em}
nav a{margin-right:1em}
"""


# ------------------------------------------------------------------ numbers
def _value(m: Any) -> float | None:
    v = m.get("value") if isinstance(m, dict) else m
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


def headline_rows(results: dict[str, Any], headline: Sequence[tuple[str, str, str]]) -> list[dict[str, Any]]:
    """Per headline metric: both models' values (with CI for single metrics), delta (B - A), the
    paired-bootstrap p-value, direction, and for metric families the per-member significance."""
    models = results["models"]
    if not models:
        return []
    pair = next(iter(results.get("compare", {}).values()), {})
    rows = []
    for task, metric, label in headline:
        row: dict[str, Any] = {"label": label, "task": task, "metric": metric, "values": [], "cis": []}
        for m in models:
            metrics = m["tasks"].get(task, {}).get("metrics", {})
            if metric.endswith("/"):
                vals = [
                    v for k, x in metrics.items() if k.startswith(metric) and (v := _value(x)) is not None
                ]
                row["values"].append(float(np.mean(vals)) if vals else None)
                row["cis"].append(None)
                row["family_size"] = len(vals)
            else:
                x = metrics.get(metric)
                row["values"].append(_value(x) if x is not None else None)
                lo, hi = (x or {}).get("ci_low"), (x or {}).get("ci_high")
                row["cis"].append((lo, hi) if lo is not None and hi is not None else None)
        if all(v is None for v in row["values"]):
            continue
        cmp_task = pair.get(task, {})
        if metric.endswith("/"):
            # a family mean has no per-sample form; its members (mean_auc/<dim> -> auc/<dim>/<tag>) do
            prefix = "auc/" if metric == "mean_auc/" else metric
            members = [
                r for k, r in cmp_task.items() if k.startswith(prefix) and r.get("p_value") is not None
            ]
            row["higher_is_better"] = True
            row["p_value"] = None
            row["family_sig"] = {
                "b_better": sum(1 for r in members if r["p_value"] < ALPHA and r["delta"] < 0),
                "a_better": sum(1 for r in members if r["p_value"] < ALPHA and r["delta"] > 0),
                "n": len(members),
            }
        else:
            c = cmp_task.get(metric, {})
            row["higher_is_better"] = bool(c.get("higher_is_better", not metric.endswith(("mae", "rank"))))
            row["p_value"] = c.get("p_value")
        a, b = (row["values"] + [None, None])[:2]
        row["delta"] = None if a is None or b is None else b - a
        row["chance"] = _chance(models[0]["tasks"].get(task, {}), metric)
        rows.append(row)
    return rows


def _chance(task: dict[str, Any], metric: str) -> float | None:
    """What a random model scores: 0.5 AUC, 1/classes accuracy, ~1/gallery retrieval R@1."""
    info = task.get("info", {}) or {}
    if "auc" in metric:
        return 0.5
    if metric == "acc1" and isinstance(info.get("classes"), list) and info["classes"]:
        return 1.0 / len(info["classes"])
    if metric.endswith("R@1") and info.get("n_texts") and info.get("n_images"):
        return 1.0 / float(info["n_texts" if metric.startswith("image_to_text") else "n_images"])
    return None


def _fmt(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _pfmt(p: float | None) -> str:
    return "n/a" if p is None else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def reading(
    rows: list[dict[str, Any]],
    names: tuple[str, str],
    *,
    n_test: int | None,
    n_params: int | None,
    steps: dict[str, int],
    n_images: int | None,
    n_metrics_compared: int,
) -> tuple[list[str], list[str]]:
    """(findings, caveats): short plain-language sentences generated from the headline rows."""
    a_name, b_name = names
    findings: list[str] = []
    wins = {a_name: 0, b_name: 0}
    sig = {a_name: 0, b_name: 0}
    for r in rows:
        a, b = (r["values"] + [None, None])[:2]
        if a is None or b is None:
            findings.append(f"{r['label']}: only one model has this number ({_fmt(a)} vs {_fmt(b)}).")
            continue
        if a == b:
            findings.append(f"{r['label']}: a tie at {_fmt(a)}.")
            continue
        b_better = (b > a) == r["higher_is_better"]
        winner, loser = (b_name, a_name) if b_better else (a_name, b_name)
        wv, lv = (b, a) if b_better else (a, b)
        wins[winner] += 1
        rel = f" ({abs(b - a) / abs(a) * 100:.0f}% relative)" if abs(a) > 1e-9 else ""
        sentence = f"<b>{html.escape(r['label'])}</b>: {html.escape(winner)} {_fmt(wv)} vs {_fmt(lv)}{rel}"
        chance = r.get("chance")
        if chance is not None and max(a, b) < chance + max(0.05, 0.5 * chance):
            sentence += f" (both close to chance, {_fmt(chance)})"
        if r.get("family_sig") is not None:
            fs = r["family_sig"]
            sentence += (
                f" (mean of {r.get('family_size', '?')} per-dimension AUCs; "
                f"per-tag differences at p < {ALPHA}: "
                f"{fs['b_better']} favour {html.escape(b_name)}, "
                f"{fs['a_better']} favour {html.escape(a_name)}, of {fs['n']})."
            )
        elif r.get("p_value") is not None:
            p = r["p_value"]
            if p < ALPHA:
                sig[winner] += 1
                sentence += f": <span class='sig'>significant</span> (paired bootstrap p = {_pfmt(p)})."
            else:
                sentence += (
                    f": <span class='ns'>not significant</span> (p = {_pfmt(p)}; "
                    f"{html.escape(loser)} could equally be ahead on another draw of test images)."
                )
        else:
            sentence += "."
        findings.append(sentence)
    scored = wins[a_name] + wins[b_name]
    if scored:
        lead = b_name if wins[b_name] > wins[a_name] else a_name if wins[a_name] > wins[b_name] else None
        head = (
            f"Overall, <b>{html.escape(lead)}</b> is ahead on {wins[lead]} of {scored} headline metrics"
            if lead
            else f"The two models split the {scored} headline metrics evenly"
        )
        head += (
            f"; {sig[b_name] + sig[a_name]} of the single-number differences are significant at p < {ALPHA} "
            f"({sig[b_name]} for {html.escape(b_name)}, {sig[a_name]} for {html.escape(a_name)})."
        )
        findings.insert(0, head)
    caveats = [
        "The data are <b>simulated</b> (sonofm's physics-based B-mode simulator with exact ground truth): "
        "numbers show the pipeline and the objectives working, not clinical performance.",
        f"The model is the <b>tiny</b> preset ({n_params / 1e6:.1f} M parameters)"
        if n_params
        else "The model is the <b>tiny</b> preset",
    ]
    if steps:
        caveats[-1] += (
            ", trained for only "
            + " / ".join(f"{v} steps ({html.escape(k)})" for k, v in steps.items())
            + " on the CPU: both models are far from converged, and a longer run can change the ranking."
        )
    else:
        caveats[-1] += "; training was short, so both models are far from converged."
    if n_test:
        caveats.append(
            f"The test split has only <b>{n_test} images</b>"
            + (f" (of {n_images} simulated)" if n_images else "")
            + ": the 95% intervals are wide and small differences are noise."
        )
    if n_metrics_compared:
        caveats.append(
            f"{n_metrics_compared} metrics were compared without correction for multiple testing: about "
            f"{max(1, round(n_metrics_compared * ALPHA))} of them would come out 'significant' "
            f"at p < {ALPHA} by chance alone."
        )
    return findings, caveats


# ------------------------------------------------------------------ figures
def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def training_figures(runs: dict[str, Path]) -> list[tuple[str, str]]:
    """Loss terms vs step (one panel per run) and validation retrieval vs step (both runs)."""
    from sonofm.eval.report import _png
    from sonofm.train.metrics_log import read_metrics

    records = {}
    for name, run in runs.items():
        path = Path(run) / "metrics.jsonl"
        if path.is_file():
            records[name] = read_metrics(path)
        else:
            log.warning("no training log %s", path)
    if not records:
        return []
    plt = _plt()
    figs = []
    fig, axes = plt.subplots(1, len(records), figsize=(4.6 * len(records), 3.6), squeeze=False)
    for ax, (name, recs) in zip(axes[0], records.items(), strict=True):
        train = [r for r in recs if "loss" in r and not any(k.startswith("val/") for k in r)]
        terms = ["loss"] + sorted({k for r in train for k in r if k.endswith("_loss")})
        for t in terms:
            pts = [(r["step"], r[t]) for r in train if isinstance(r.get(t), int | float)]
            if pts:
                x, y = zip(*pts, strict=True)
                ax.plot(x, y, marker="." if len(pts) < 30 else None, lw=2.0 if t == "loss" else 1.2, label=t)
        ax.set(title=f"{name}: training loss terms", xlabel="optimizer step", ylabel="loss")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    figs.append((_png(fig), "Training loss (total and each term) per optimizer step"))
    fig, axes = plt.subplots(1, 2, figsize=(9.2, 3.6))
    for k, (key, title) in enumerate(
        (("val/r_mean", "mean of R@1/5/10, both directions"), ("val/r1", "R@1"))
    ):
        ax = axes[k]
        for name, recs in records.items():
            pts = [(r["step"], r[key]) for r in recs if isinstance(r.get(key), int | float)]
            if pts:
                x, y = zip(*pts, strict=True)
                ax.plot(x, y, marker="o", label=name)
        ax.set(title=f"validation retrieval: {title}", xlabel="optimizer step", ylim=(0, None))
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    figs.append((_png(fig), "Validation image-text retrieval during training (val split, after each epoch)"))
    return figs


def _data_uri_file(path: Path) -> str | None:
    import base64

    try:
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError as e:
        log.warning("cannot read %s (%s)", path, e)
        return None


def data_section(data: Path) -> str:
    """Contact sheet (made if missing), mask colour legend and image counts per region x split."""
    from sonofm.data.manifest import read_manifest
    from sonofm.data.preview import LABEL_COLOURS, contact_sheet
    from sonofm.taxonomy import MASK_LABELS

    parts = ["<h2 id='data'>The data</h2>"]
    sheet = data / "preview.png"
    try:
        if not sheet.is_file():
            contact_sheet(data, sheet)
        src = _data_uri_file(sheet)
    except (OSError, ValueError) as e:
        log.warning("no contact sheet for %s (%s)", data, e)
        src = None
    if src:
        parts.append(
            "<p>One simulated image per body region and per echocardiography view, with the "
            "segmentation masks outlined (colours below) and the start of the generated report.</p>"
            f'<figure><img class="sheet" src="{src}" alt="contact sheet of the simulated dataset">'
            "<figcaption>Contact sheet of the simulated dataset</figcaption></figure>"
        )
        legend = "".join(
            f'<span><i style="background:rgb{tuple(int(c) for c in LABEL_COLOURS[i])}"></i>'
            f"{html.escape(n)}</span>"
            for i, n in MASK_LABELS.items()
            if i and i < len(LABEL_COLOURS)
        )
        parts.append(f'<p class="legend">{legend}</p>')
    try:
        df = read_manifest(data)
    except Exception as e:  # a report must still render when the manifest is unreadable
        log.warning("cannot read manifest of %s (%s)", data, e)
        return "".join(parts)
    splits = [s for s in ("train", "val", "test") if s in set(df["split"])]
    counts = df.groupby(["region", "split"]).size().unstack(fill_value=0)
    head = "".join(f"<th>{html.escape(s)}</th>" for s in splits)
    body = "".join(
        f"<tr><td>{html.escape(str(reg))}</td>"
        + "".join(f"<td>{int(counts.loc[reg].get(s, 0))}</td>" for s in splits)
        + f"<td>{int(counts.loc[reg].sum())}</td></tr>"
        for reg in counts.index
    )
    total = "".join(f"<td><b>{int((df['split'] == s).sum())}</b></td>" for s in splits)
    parts.append(
        f"<p>{len(df)} images of {df['patient_id'].nunique()} simulated patients; splits are by patient.</p>"
        f"<table><tr><th>region</th>{head}<th>all</th></tr>{body}"
        f"<tr><td><b>all</b></td>{total}<td><b>{len(df)}</b></td></tr></table>"
    )
    return "".join(parts)


def eval_body(path: Path) -> str:
    """The body of the evaluation's own report.html, headings demoted one level."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        log.warning("no evaluation report %s (%s)", path, e)
        return "<p>The evaluation report is missing.</p>"
    m = re.search(r"<body>(.*)</body>", text, flags=re.S)
    body = m.group(1) if m else ""
    for level in (4, 3, 2, 1):
        body = re.sub(rf"<(/?)h{level}>", rf"<\1h{level + 1}>", body)
    return body


# ------------------------------------------------------------------ page
def _headline_table(rows: list[dict[str, Any]], names: tuple[str, str]) -> str:
    def cell(v: float | None, ci: Any) -> str:
        s = _fmt(v)
        if ci:
            s += f" <span class='meta'>[{_fmt(ci[0])}, {_fmt(ci[1])}]</span>"
        return s

    body = []
    for r in rows:
        a, b = (r["values"] + [None, None])[:2]
        ca, cb = (r["cis"] + [None, None])[:2]
        better = None
        if a is not None and b is not None and a != b:
            better = 1 if (b > a) == r["higher_is_better"] else 0
        cells = [cell(a, ca), cell(b, cb)]
        if better is not None:
            cells[better] = f"<span class='win'>{cells[better]}</span>"
        p = r.get("p_value")
        p_txt = _pfmt(p) if p is not None else ("per tag below" if r.get("family_sig") else "n/a")
        arrow = "&uarr;" if r["higher_is_better"] else "&darr;"
        body.append(
            f"<tr><td>{html.escape(r['label'])} {arrow}</td><td>{cells[0]}</td><td>{cells[1]}</td>"
            f"<td>{_fmt(r['delta'])}</td><td>{p_txt}</td></tr>"
        )
    return (
        f"<table><tr><th>metric (&uarr; higher is better)</th><th>{html.escape(names[0])}</th>"
        f"<th>{html.escape(names[1])}</th><th>delta (B &minus; A)</th><th>paired bootstrap p</th></tr>"
        + "".join(body)
        + "</table>"
    )


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
    from sonofm.eval.report import CSS, _figure

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
    n_compared = sum(
        1
        for tasks in results.get("compare", {}).values()
        for ms in tasks.values()
        for r in ms.values()
        if "p_value" in r
    )
    findings, caveats = reading(
        rows,
        names,
        n_test=n_images.get("test"),
        n_params=(models[0].get("card", {}).get("n_parameters") if models else None),
        steps=steps,
        n_images=sum(n_images.values()) or None,
        n_metrics_compared=n_compared,
    )
    total_s = sum(float(v.get("seconds", 0)) for v in stages.values())
    stage_txt = ", ".join(f"{html.escape(k)} {float(v.get('seconds', 0)):.0f} s" for k, v in stages.items())
    mach = ", ".join(f"{html.escape(str(k))}: {html.escape(str(v))}" for k, v in machine.items())
    body = [
        "<h1>sonofm demo: plain CLIP vs an ultrasound-aware model</h1>",
        '<nav><a href="#reading">reading</a><a href="#headline">headline numbers</a><a href="#data">data</a>'
        '<a href="#training">training</a><a href="#eval">full evaluation</a></nav>',
        f"<p class='lead'>This run simulated {sum(n_images.values()) or plan.get('n_images')} "
        "ultrasound images (seven body regions plus echocardiography views, "
        f"{plan.get('image_size')} px), pretrained two "
        f"image-text models with the same tiny architecture and budget ({plan.get('epochs')} epochs): "
        f"<b>{html.escape(names[0])}</b>, the plain CLIP contrastive baseline, and "
        f"<b>{html.escape(names[1])}</b>, "
        "which adds ultrasound-aware objectives (soft labels from report similarity, a semantic loss, the "
        "attribute graph, view-aware and negation-aware terms), then evaluated both on the same held-out "
        "test images with the same suite.</p>",
        f"<p class='meta'>Stages: {stage_txt} (total {total_s / 60:.1f} min). Machine: {mach}.</p>",
        "<h2 id='reading'>What the numbers say</h2>",
        "<ul class='reading'>" + "".join(f"<li>{f}</li>" for f in findings) + "</ul>",
        "<div class='caveat'><b>Caveats.</b><ul>" + "".join(f"<li>{c}</li>" for c in caveats) + "</ul></div>",
        "<h2 id='headline'>Headline numbers (test split, 95% bootstrap CIs)</h2>",
        _headline_table(rows, names),
        "<p class='meta'>Bold marks the better model. p is a two-sided paired bootstrap over the same test "
        "images (both models resampled together). Family rows (AUC means) average per-dimension AUCs; "
        "the per-tag tests are in the comparison table of the full evaluation.</p>",
        data_section(out / "data"),
        "<h2 id='training'>Training</h2>",
    ]
    figs = training_figures(runs)
    if figs:
        body.append('<div class="figs wide">' + "".join(_figure(s, c) for s, c in figs) + "</div>")
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
