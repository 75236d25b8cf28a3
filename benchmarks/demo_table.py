# SPDX-License-Identifier: Apache-2.0
"""The README's demo table, from a finished demo folder: headline metrics with chance level,
each model's value and its patient-level 95% CI.

Usage::

    python benchmarks/demo_table.py demo-out        # prints Markdown
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# `python benchmarks/x.py` puts benchmarks/ first on sys.path: keep only the real paths.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def _cell(task: dict, metric: str) -> tuple[str, int | None]:
    """ "value (CI)" of one metric; a family ("mean_auc/") is the mean over its members (no CI)."""
    from sonofm.demo import _find_metric

    value = _find_metric({"t": task}, "t", metric)
    if value is None:
        return "n/a", None
    m = task.get("metrics", {}).get(metric, {})
    if m.get("ci_low") is None or m.get("ci_high") is None:
        return f"{value:.3f}", m.get("n_patients")
    return f"{value:.3f} ({m['ci_low']:.2f}-{m['ci_high']:.2f})", m.get("n_patients")


def table(out: Path) -> str:
    from sonofm.demo import HEADLINE, MODEL_KEYS
    from sonofm.demo_reading import _chance

    results = json.loads((out / "eval" / "results.json").read_text())
    models = results["models"]
    test = results["data"]
    n_images = test.get("n_images", {}).get("test")
    n_patients = test.get("n_patients", {}).get("test")
    head = f"| metric (test split, {n_images} images of {n_patients} patients) | chance | "
    head += " | ".join(MODEL_KEYS) + " |\n|---|---|" + "---|" * len(MODEL_KEYS)
    lines = [head]
    for task_name, metric, label in HEADLINE:
        cells = []
        chance = None
        patients = None
        for model in models:
            task = model["tasks"].get(task_name) or {}
            chance = chance if chance is not None else _chance(task, metric)
            cell, n = _cell(task, metric)
            cells.append(cell)
            patients = n or patients
        if task_name == "zeroshot/view" and patients:
            label = f"{label} ({patients} patients)"
        lines.append(
            f"| {label} | {'-' if chance is None else f'{chance:.3f}'} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    print(table(Path(sys.argv[1])))
