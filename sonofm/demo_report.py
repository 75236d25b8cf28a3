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
from sonofm.eval.health import chance_relation
from sonofm.eval.metrics import MIN_PATIENTS
from sonofm.eval.reading import model_alerts, patients_phrase

log = logging.getLogger(__name__)

ALPHA = 0.05
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


# ------------------------------------------------------------------ numbers
def _value(m: Any) -> float | None:
    v = m.get("value") if isinstance(m, dict) else m
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


def expand_headline(headline: Sequence[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """Every zero-shot accuracy row gets its macro-AUC row beside it.

    Why: accuracy alone hides the only signal of a model whose argmax collapsed onto one class
    (region accuracy 0.000 with a region macro AUC of 0.77), and hides anti-correlation (AUC < 0.5).
    """
    out: list[tuple[str, str, str]] = []
    for task, metric, label in headline:
        out.append((task, metric, label))
        if task.startswith("zeroshot/") and metric == "acc1":
            auc_label = label[: -len(" acc")] if label.endswith(" acc") else label
            out.append((task, "macro_auc", f"{auc_label} macro AUC"))
    return out


def headline_rows(results: dict[str, Any], headline: Sequence[tuple[str, str, str]]) -> list[dict[str, Any]]:
    """Per headline metric: both models' values, CIs and patient counts, delta (B - A), the paired
    bootstrap p-value (raw and Holm-corrected, or why there is no test), the chance level, direction,
    and for metric families the per-member significance (raw and Holm-corrected counts)."""
    models = results["models"]
    if not models:
        return []
    pair = next(iter(results.get("compare", {}).values()), {})
    rows = []
    for task, metric, label in expand_headline(headline):
        row: dict[str, Any] = {
            "label": label,
            "task": task,
            "metric": metric,
            "values": [],
            "cis": [],
            "n_patients": [],
        }
        for m in models:
            metrics = m["tasks"].get(task, {}).get("metrics", {})
            if metric.endswith("/"):
                vals = [
                    v for k, x in metrics.items() if k.startswith(metric) and (v := _value(x)) is not None
                ]
                row["values"].append(float(np.mean(vals)) if vals else None)
                row["cis"].append(None)
                row["n_patients"].append(None)
                row["family_size"] = len(vals)
            else:
                x = metrics.get(metric) or {}
                row["values"].append(_value(x) if x else None)
                lo, hi = _value(x.get("ci_low")), _value(x.get("ci_high"))
                row["cis"].append((lo, hi) if lo is not None and hi is not None else None)
                row["n_patients"].append(x.get("n_patients"))
        if all(v is None for v in row["values"]):
            continue
        cmp_task = pair.get(task, {})
        if metric.endswith("/"):
            # a family mean has no per-sample form; its members (mean_auc/<dim> -> auc/<dim>/<tag>) do
            prefix = "auc/" if metric == "mean_auc/" else metric
            members = [
                r for k, r in cmp_task.items() if k.startswith(prefix) and r.get("p_value") is not None
            ]

            def sig(r: dict[str, Any], key: str) -> bool:
                return r.get(key) is not None and r[key] < ALPHA

            row["higher_is_better"] = True
            row["p_value"] = None
            row["family_sig"] = {
                "b_better": sum(1 for r in members if sig(r, "p_value") and r["delta"] < 0),
                "a_better": sum(1 for r in members if sig(r, "p_value") and r["delta"] > 0),
                "b_better_holm": sum(1 for r in members if sig(r, "p_holm") and r["delta"] < 0),
                "a_better_holm": sum(1 for r in members if sig(r, "p_holm") and r["delta"] > 0),
                "n": len(members),
            }
        else:
            c = cmp_task.get(metric, {})
            row["higher_is_better"] = bool(
                c.get("higher_is_better", not metric.endswith(("mae", "rank", "ece")))
            )
            row["p_value"] = c.get("p_value")
            row["p_holm"] = c.get("p_holm")
            row["untestable"] = c.get("untestable")
        a, b = (row["values"] + [None, None])[:2]
        row["delta"] = None if a is None or b is None else b - a
        row["chance"] = _chance(models[0]["tasks"].get(task, {}), metric)
        rows.append(row)
    return rows


def _chance(task: dict[str, Any], metric: str) -> float | None:
    """What random guessing scores: 0.5 AUC, 1/classes accuracy, ~K/gallery retrieval R@K."""
    info = task.get("info", {}) or {}
    if "auc" in metric:
        return 0.5
    if metric == "acc1" and isinstance(info.get("classes"), list) and info["classes"]:
        return 1.0 / len(info["classes"])
    k = metric.rpartition("R@")[2]
    if "R@" in metric and k.isdigit() and info.get("n_texts") and info.get("n_images"):
        gallery = float(info["n_texts" if metric.startswith("image_to_text") else "n_images"])
        return min(1.0, int(k) / gallery)  # one positive per query; more positives raise it
    return None


def _fmt(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _pfmt(p: float | None) -> str:
    return "n/a" if p is None else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def _chance_sentence(r: dict[str, Any], names: tuple[str, str]) -> str:
    """Where each model stands against chance, decided by its CI (or a tolerance without one)."""
    chance = r.get("chance")
    if chance is None or not r["higher_is_better"]:
        return ""
    cis = (r.get("cis", []) + [None, None])[:2]
    rels = [
        chance_relation(v, *(ci if ci else (None, None)), chance)
        for v, ci in zip((r["values"] + [None, None])[:2], cis, strict=True)
    ]
    words = {"below": "below chance", "at": "indistinguishable from chance", "above": "above chance"}
    below = (
        "anti-correlated with the truth (worse than guessing)"
        if "auc" in r["metric"]
        else "worse than guessing"
    )
    c = f"chance is {_fmt(chance)}"
    if rels[0] == rels[1] and rels[0] is not None:
        tail = f", i.e. {below}" if rels[0] == "below" else ""
        return f" Against chance ({c}): both are {words[rels[0]]}{tail}."
    parts = [
        f"{html.escape(n)} is {words[x]}" + (f" ({below})" if x == "below" else "")
        for n, x in zip(names, rels, strict=True)
        if x is not None
    ]
    return f" Against chance ({c}): " + ", ".join(parts) + "." if parts else ""


def _patients_text(r: dict[str, Any]) -> str:
    ks = {k for k in r.get("n_patients", []) if k is not None}
    return f"; {patients_phrase(min(ks))} in the test split" if ks else ""


def reading(
    rows: list[dict[str, Any]],
    names: tuple[str, str],
    *,
    n_test: int | None,
    n_test_patients: int | None = None,
    n_params: int | None,
    steps: dict[str, int],
    n_images: int | None,
    multiple_testing: dict[str, int] | None = None,
    alerts: dict[str, list[str]] | None = None,
    preset: str = "tiny",
) -> tuple[list[str], list[str]]:
    """(findings, caveats): plain-language sentences generated from the headline rows.

    A difference is called significant only when its Holm-corrected p (over every metric the
    comparison tested) is below ALPHA and the test split has at least MIN_PATIENTS patients;
    `alerts` (per model: collapse, below-chance AUC, too few patients) become sentences too.
    """
    a_name, b_name = names
    findings: list[str] = []
    wins = {a_name: 0, b_name: 0}
    sig = {a_name: 0, b_name: 0}
    for r in rows:
        a, b = (r["values"] + [None, None])[:2]
        if a is None or b is None:
            findings.append(
                f"{html.escape(r['label'])}: only one model has this number ({_fmt(a)} vs {_fmt(b)})."
            )
            continue
        if _fmt(a) == _fmt(b):  # equal as printed: calling a winner would contradict the table
            findings.append(f"{html.escape(r['label'])}: a tie at {_fmt(a)}.{_chance_sentence(r, names)}")
            continue
        b_better = (b > a) == r["higher_is_better"]
        winner, loser = (b_name, a_name) if b_better else (a_name, b_name)
        wv, lv = (b, a) if b_better else (a, b)
        wins[winner] += 1
        rel = f"{abs(b - a) / abs(a) * 100:.0f}% relative" if abs(a) > 1e-9 else ""
        extra = "; ".join(x for x in (rel, _patients_text(r).removeprefix("; ")) if x)
        sentence = f"<b>{html.escape(r['label'])}</b>: {html.escape(winner)} {_fmt(wv)} vs {_fmt(lv)}"
        sentence += f" ({extra})" if extra else ""
        if r.get("family_sig") is not None:
            fs = r["family_sig"]
            sentence += f" (mean of {r.get('family_size', '?')} per-dimension AUCs)."
            if fs["n"]:
                sentence += (
                    f" Per-tag differences with p &lt; {ALPHA}: {fs['b_better']} favour "
                    f"{html.escape(b_name)} and {fs['a_better']} favour {html.escape(a_name)}, "
                    f"of {fs['n']}; after Holm correction "
                    f"{fs.get('b_better_holm', 0)} and {fs.get('a_better_holm', 0)}."
                )
            else:
                sentence += " No per-tag difference was tested (too few test patients)."
        elif r.get("untestable"):
            sentence += f": <span class='ns'>not tested</span> ({html.escape(r['untestable'])})."
        elif r.get("p_value") is not None:
            p, ph = r["p_value"], r.get("p_holm")
            if p < ALPHA and (ph is None or ph < ALPHA):
                sig[winner] += 1
                sentence += (
                    f": <span class='sig'>significant</span> (paired bootstrap over patients, p = {_pfmt(p)}"
                )
                sentence += f"; Holm-corrected p = {_pfmt(ph)})." if ph is not None else ")."
            elif p < ALPHA:
                sentence += (
                    f": <span class='ns'>not significant after correction</span> (p = {_pfmt(p)} alone, "
                    f"Holm-corrected p = {_pfmt(ph)} over all the metrics compared)."
                )
            else:
                sentence += (
                    f": <span class='ns'>not significant</span> (p = {_pfmt(p)}; "
                    f"{html.escape(loser)} could equally be ahead on another draw of test patients)."
                )
        else:
            sentence += "."
        findings.append(sentence + _chance_sentence(r, names))
    scored = wins[a_name] + wins[b_name]
    if scored:
        lead = b_name if wins[b_name] > wins[a_name] else a_name if wins[a_name] > wins[b_name] else None
        head = (
            f"Overall, <b>{html.escape(lead)}</b> is ahead on {wins[lead]} of {scored} headline metrics"
            if lead
            else f"The two models split the {scored} headline metrics evenly"
        )
        head += (
            f"; {sig[b_name] + sig[a_name]} of the single-number differences are significant "
            f"at p &lt; {ALPHA} after Holm correction ({sig[b_name]} for {html.escape(b_name)}, "
            f"{sig[a_name]} for {html.escape(a_name)})."
        )
        findings.insert(0, head)
    # one warning per text, naming every model it applies to
    who: dict[str, list[str]] = {}
    for model, items in (alerts or {}).items():
        for item in items:
            who.setdefault(item, []).append(model)
    for item, models in who.items():
        label = "both models" if len(models) == 2 and len(alerts or {}) == 2 else ", ".join(models)
        findings.append(f"<span class='warn'>Warning ({html.escape(label)})</span>: {html.escape(item)}")
    caveats = [
        "The data are <b>simulated</b> (sonofm's physics-based B-mode simulator with exact ground truth): "
        "numbers show the pipeline and the objectives working, not clinical performance.",
        f"The model is the <b>{html.escape(preset)}</b> preset ({n_params / 1e6:.1f} M parameters)"
        if n_params
        else f"The model is the <b>{html.escape(preset)}</b> preset",
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
        who = f" of <b>{patients_phrase(n_test_patients)}</b>" if n_test_patients is not None else ""
        caveats.append(
            f"The test split has only <b>{n_test} images</b>{who}"
            + (f" (of {n_images} simulated)" if n_images else "")
            + ": intervals and tests resample whole patients (a patient's images are near-duplicates), "
            "so the 95% intervals are wide and small differences are noise."
        )
    if n_test_patients is not None and n_test_patients < MIN_PATIENTS:
        caveats.append(
            f"With fewer than {MIN_PATIENTS} test patients no difference is tested or called significant."
        )
    mt = multiple_testing or {}
    if mt.get("tests"):
        caveats.append(
            f"{mt['tests']} metric differences were tested: {mt['raw']} have p &lt; {ALPHA} before "
            f"correction (about {mt['tests'] * ALPHA:.1f} would by chance alone if the models were equal); "
            f"{mt['holm']} remain after Holm's correction (family-wise error) and {mt['bh']} after "
            "Benjamini-Hochberg (false discovery rate). The reading calls a difference significant only "
            "after Holm's correction."
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
        from sonofm.data.manifest import read_manifest

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
        "attribute labels), then evaluated both on the same held-out "
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
