"""Self-contained HTML report: metric tables, ROC curves, confusion matrices, reliability diagrams,
retrieval examples with thumbnails and a t-SNE map of the image embeddings.

Every figure is a matplotlib PNG embedded as base64 and there is no JavaScript, so the file opens
offline in any browser and can be attached to a ticket or e-mail as is.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from sonofm.atomic import atomic_write_text
from sonofm.data.decode import open_image
from sonofm.eval.tables import _ci, _fmt, _p, multiple_testing_sentence
from sonofm.figures import (  # noqa: F401 (CSS, confusion/scatter figures, png_data_uri: re-exported)
    CSS,
    confusion_figure,
    figure_html,
    png_data_uri,
    png_figure,
    pyplot,
    scatter_figure,
)
from sonofm.stats.metrics import reliability_bins
from sonofm.stats.reading import alerts_html, model_alerts, task_alerts

log = logging.getLogger(__name__)

MAX_ROC_CLASSES = 12
# the figure kit's names as this module has always spelled them
_png, _figure, _plt = png_figure, figure_html, pyplot


def roc_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str) -> str | None:
    """ROC curves from {label: (y_true binary, score)}; curves with one class are left out."""
    from sklearn.metrics import roc_auc_score, roc_curve  # lazy: sklearn is slow; only ROC plots need it

    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.2, 4))
    drawn = 0
    for label, (y, s) in list(curves.items())[:MAX_ROC_CLASSES]:
        y = np.asarray(y).astype(int)
        if y.min() == y.max():
            continue
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, lw=1.2, label=f"{label} ({roc_auc_score(y, s):.2f})")
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=6, loc="lower right")
    return _png(fig)


def reliability_figure(y: np.ndarray, probs: np.ndarray, title: str, n_bins: int = 10) -> str:
    plt = _plt()
    conf, acc, count = reliability_bins(y, probs, n_bins)
    ok = count > 0
    fig, ax = plt.subplots(figsize=(4, 4))
    centers = (np.arange(n_bins) + 0.5) / n_bins
    ax.bar(centers[ok], acc[ok], width=1 / n_bins, edgecolor="k", alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8, label="perfect calibration")
    ax.plot(conf[ok], acc[ok], "o", c="C3", ms=3, label="bin mean confidence")
    ax.set(xlabel="confidence", ylabel="accuracy", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=6, loc="upper left")
    return _png(fig)


def tsne_figures(
    emb: np.ndarray, colour_by: dict[str, list[Any]], seed: int = 0, max_points: int = 3000
) -> list[str]:
    """t-SNE (sklearn) of image embeddings, one panel per colouring (region, attribute, ...)."""
    from sklearn.manifold import TSNE  # lazy: sklearn is slow to import (~1.5 s); only the t-SNE map uses it

    n = len(emb)
    if n < 5:
        return []
    idx = np.arange(n)
    if n > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))
    perplexity = float(min(30.0, max(2.0, (len(idx) - 1) / 3)))
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(emb[idx])
    plt = _plt()
    out = []
    for name, values in colour_by.items():
        vals = np.array([str(values[i]) if values[i] is not None else "unknown" for i in idx])
        fig, ax = plt.subplots(figsize=(5, 4.2))
        for k, v in enumerate(sorted(set(vals))):
            m = vals == v
            ax.scatter(xy[m, 0], xy[m, 1], s=8, alpha=0.8, label=v, color=plt.cm.tab20(k % 20))
        ax.set(title=f"t-SNE of image embeddings, coloured by {name}", xticks=[], yticks=[])
        ax.legend(fontsize=6, markerscale=1.5, loc="center left", bbox_to_anchor=(1, 0.5))
        out.append(_png(fig))
    return out


def _thumb(path: Path, size: int = 96) -> str | None:
    try:
        with open_image(path) as im:  # one pixel limit; any decoder failure is a ValueError
            im = im.convert("L")
            im.thumbnail((size, size))
            buf = io.BytesIO()
            im.save(buf, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    except (OSError, ValueError) as e:
        log.warning("no thumbnail for %s (%s)", path, e)
        return None


def _metrics_table(task: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(_ci(v))}</td></tr>"
        for k, v in task["metrics"].items()
    )
    return f"<table><tr><th>metric</th><th>value [95% CI]</th></tr>{rows}</table>"


def _task_figures(res: Any, root: Path) -> list[str]:
    figs: list[str] = []
    p = res.plots
    if "probs" in p and "y" in p:
        y, probs, classes = np.asarray(p["y"]), np.asarray(p["probs"]), list(p["classes"])
        curves = {c: (y == k, probs[:, k]) for k, c in enumerate(classes)}
        src = roc_figure(curves, f"{res.name}: ROC (one-vs-rest)")
        if src:
            figs.append(_figure(src, f"{res.name}: ROC curves (AUC in legend)"))
        conf = np.zeros((len(classes), len(classes)), dtype=np.int64)
        np.add.at(conf, (y, probs.argmax(1)), 1)
        figs.append(_figure(confusion_figure(conf, classes, res.name), f"{res.name}: confusion matrix"))
        figs.append(_figure(reliability_figure(y, probs, res.name), f"{res.name}: reliability diagram"))
    if "roc" in p:
        items = list(p["roc"].items())
        for a in range(0, len(items), MAX_ROC_CLASSES):
            src = roc_figure(dict(items[a : a + MAX_ROC_CLASSES]), f"{res.name}: ROC")
            if src:
                figs.append(_figure(src, f"{res.name}: finding ROC curves ({a // MAX_ROC_CLASSES + 1})"))
        ys = np.concatenate([np.asarray(v[0]) for _, v in items])
        ps = np.concatenate([np.asarray(v[1]) for _, v in items])
        figs.append(_figure(reliability_figure(ys, ps, f"{res.name} (pooled)"), f"{res.name}: reliability"))
    for t, (y, pred) in p.get("scatter", {}).items():
        figs.append(_figure(scatter_figure(np.asarray(y), np.asarray(pred), t), f"{res.name}: {t}"))
    # Pre-rendered figures (segmentation overlays, landmark plots, generated-report examples):
    # a task renders them itself with `report._png(fig)` or `png_data_uri(array)`.
    for src, caption in p.get("images", []):
        figs.append(_figure(src, f"{res.name}: {caption}"))
    return figs


def _examples_html(examples: list[dict[str, Any]], root: Path) -> str:
    parts = []
    for ex in examples:
        img_path = Path(ex["image"]) if os.path.isabs(ex["image"]) else root / ex["image"]
        src = _thumb(img_path)
        img = f'<img src="{src}" alt="{html.escape(ex["id"])}">' if src else ""
        items = "".join(
            f'<li class="{"ok" if r["correct"] else "bad"}">{"&#10003;" if r["correct"] else "&#10007;"} '
            f"{html.escape(r['text'][:220])}</li>"
            for r in ex["retrieved"]
        )
        parts.append(
            f'<div class="ex">{img}<div><div class="meta">{html.escape(ex["id"])} &mdash; truth: '
            f"{html.escape(ex['truth'][:220])}</div><ol>{items}</ol></div></div>"
        )
    return "".join(parts)


def build_html(doc: dict[str, Any], runs: list[Any]) -> str:
    """The report document (runs: `runner.ModelRun`s with task results and embeddings)."""
    root = Path(doc["data"]["dir"])
    title = f"sonofm evaluation: {doc['suite']['name']}"
    body = [f"<h1>{html.escape(title)}</h1>"]
    pts = doc["data"].get("n_patients", {})
    counts = ", ".join(
        f"{k}: {v} images" + (f" of {pts[k]} patients" if k in pts else "")
        for k, v in sorted(doc["data"]["n_images"].items())
    )
    unit = "patients" if doc["suite"].get("bootstrap_unit", "patient") == "patient" else "images"
    body.append(
        f'<p class="meta">data <code>{html.escape(doc["data"]["dir"])}</code> ({html.escape(counts)}); '
        f"{doc['suite']['n_boot']} bootstrap resamples of whole {unit}, "
        "95% bias-corrected percentile CIs, each followed by the number of test patients it rests on; "
        f"sonofm {doc['sonofm_version']}</p>"
    )
    for pair, tasks in doc.get("compare", {}).items():
        a, b = pair.split(" vs ", 1)

        def p_cell(r: dict[str, Any]) -> str:
            if "note" in r:
                return html.escape(r["note"])
            return html.escape(r["untestable"]) if "untestable" in r else _p(r.get("p_value"))

        rows = "".join(
            f"<tr><td>{html.escape(t)}</td><td>{html.escape(m)}</td><td>{_fmt(r.get('a'))}</td>"
            f"<td>{_fmt(r.get('b'))}</td><td>{_fmt(r.get('delta'))}</td><td>{_fmt(r.get('n_patients'))}</td>"
            f"<td>{p_cell(r)}</td><td>{_p(r.get('p_holm'))}</td><td>{_p(r.get('p_bh'))}</td></tr>"
            for t, ms in tasks.items()
            for m, r in ms.items()
        )
        body.append(
            f"<h2>Compare {html.escape(pair)} (paired bootstrap over patients)</h2><table><tr><th>task</th>"
            f"<th>metric</th><th>{html.escape(a)}</th><th>{html.escape(b)}</th><th>delta</th>"
            f"<th>test patients</th><th>p</th><th>p (Holm)</th><th>p (BH)</th></tr>{rows}</table>"
            f"<p class='meta'>{html.escape(multiple_testing_sentence(doc, pair))}</p>"
        )
    for run, mdoc in zip(runs, doc["models"], strict=True):
        body.append(f"<h2>Model {html.escape(run.label)}</h2>")
        body.append(f'<p class="meta"><code>{html.escape(run.model_dir)}</code> hash {run.hash[:12]}</p>')
        body.append(alerts_html(model_alerts(mdoc)))
        for name, res in run.results.items():
            tdoc = mdoc["tasks"][name]
            body.append(f"<h3>{html.escape(name)}</h3>")
            if res.skipped:
                body.append(f"<p>Skipped: {html.escape(res.skipped)}</p>")
                continue
            body.append(alerts_html(task_alerts(name, tdoc)))
            body.append(_metrics_table(tdoc))
            figs = _task_figures(res, root)
            if figs:
                body.append('<div class="figs">' + "".join(figs) + "</div>")
            if "examples" in res.plots:
                body.append("<h4>Retrieval examples (image &rarr; top-3 reports)</h4>")
                body.append(_examples_html(res.plots["examples"], root))
        split = "test" if "test" in run.ctx.embeddings else next(iter(run.ctx.embeddings), None)
        if split is not None:
            rows = run.ctx.rows(split)
            colour = {"region": rows["region"].tolist(), "diagnosis": rows["diagnosis"].tolist()}
            echo = [
                (a or {}).get("echogenicity", [None])[0] if (a or {}).get("echogenicity") else None
                for a in rows["attributes"]
            ]
            if any(e is not None for e in echo):
                colour["echogenicity"] = echo
            figs = tsne_figures(run.ctx.embeddings[split].image, colour, seed=doc["suite"]["seed"])
            if figs:
                body.append(f"<h3>Embedding map ({html.escape(split)} images)</h3>")
                body.append(
                    '<div class="figs">'
                    + "".join(
                        _figure(f, f"t-SNE of image embeddings by {name}")
                        for f, name in zip(figs, colour, strict=True)
                    )
                    + "</div>"
                )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,"><title>{html.escape(title)}</title>'
        f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )


def write_html_report(path: str | Path, doc: dict[str, Any], runs: list[Any]) -> Path:
    """Write `report.html` atomically."""
    path = Path(path)
    text = build_html(doc, runs)
    return atomic_write_text(path, text)
