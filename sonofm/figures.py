"""The figure and HTML kit shared by the reports of eval, fine-tuning, the VLM and the demo.

Figures are matplotlib PNGs embedded as base64 data URIs, so every report is one self-contained
HTML file. matplotlib is imported when a figure is drawn (it takes seconds to import, and code
that never draws does not need it).
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np
from PIL import Image

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ddd;padding:.25em .6em;
font-size:.9em;text-align:left}th{background:#f4f4f4}
.figs{display:flex;flex-wrap:wrap;gap:1em}.figs figure{margin:0}.figs img{max-width:380px}
figcaption{font-size:.8em;color:#555}.ok{color:#167a2c}.bad{color:#b02a2a}
.ex{display:flex;gap:1em;align-items:flex-start;margin:.6em 0}.ex img{width:96px;height:96px;
image-rendering:pixelated;border:1px solid #ccc}.ex ol{margin:0;font-size:.85em}
.meta{font-size:.85em;color:#555}
.alert{background:#fdecea;border-left:4px solid #c62828;padding:.5em 1em;margin:.6em 0;max-width:70em}
.alert ul{margin:.3em 0}.alert li{margin:.2em 0}
"""


def png_figure(fig: Any) -> str:
    """A matplotlib figure as an inline PNG data URI (the figure is closed)."""
    import matplotlib.pyplot as plt  # lazy: slow to import (seconds); only drawing needs it

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def figure_html(src: str, caption: str) -> str:
    """`<figure>` with the image `src` and an escaped caption."""
    cap = html.escape(caption)
    return f'<figure><img src="{src}" alt="{cap}"><figcaption>{cap}</figcaption></figure>'


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib  # lazy: slow to import (seconds); only drawing needs it

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # lazy: slow to import (seconds); only drawing needs it

    return plt


def confusion_figure(conf: np.ndarray, classes: list[str], title: str) -> str:
    plt = pyplot()
    n = len(classes)
    fig, ax = plt.subplots(figsize=(max(3.5, 0.45 * n + 1.5), max(3, 0.45 * n + 1)))
    norm = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(n), classes, fontsize=7)
    for i in range(n):
        for j in range(n):
            if conf[i, j]:
                ax.text(
                    j,
                    i,
                    str(conf[i, j]),
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return png_figure(fig)


def scatter_figure(y: np.ndarray, pred: np.ndarray, title: str) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(y, pred, s=8, alpha=0.7)
    lo, hi = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], ls="--", c="grey", lw=0.8)
    ax.set(xlabel="true", ylabel="predicted", title=title)
    return png_figure(fig)


def png_data_uri(image: np.ndarray) -> str:
    """uint8 (H, W) or (H, W, 3) array -> inline PNG data URI (for `TaskResult.plots["images"]`)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
