"""The figures and inlined sections of the demo's report.html: training curves from both runs'
`metrics.jsonl`, the data section (contact sheet, counts per region and split) and the body of
the evaluation report. Every image is an inline PNG data URI. Used by `sonofm.demo_report`.
"""

from __future__ import annotations

import base64
import html
import logging
import re
from pathlib import Path

from sonofm.data.manifest import read_manifest
from sonofm.data.preview import LABEL_COLOURS, contact_sheet
from sonofm.figures import png_figure, pyplot
from sonofm.taxonomy import MASK_LABELS

log = logging.getLogger(__name__)


_plt = pyplot  # re-exported by demo_report under its old name


def training_figures(runs: dict[str, Path]) -> list[tuple[str, str]]:
    """Loss terms vs step (one panel per run) and validation retrieval vs step (both runs)."""
    from sonofm.train.metrics_log import read_metrics  # lazy: sonofm.train imports torch; the report does not

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
    figs.append((png_figure(fig), "Training loss (total and each term) per optimizer step"))
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
    caption = "Validation image-text retrieval during training (val split, after each epoch)"
    figs.append((png_figure(fig), caption))
    return figs


def _data_uri_file(path: Path) -> str | None:
    try:
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError as e:
        log.warning("cannot read %s (%s)", path, e)
        return None


def data_section(data: Path) -> str:
    """Contact sheet (made if missing), mask colour legend and image counts per region x split."""
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
