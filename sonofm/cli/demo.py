"""The demo verb: simulate, pretrain two models, evaluate both and write a report."""

from __future__ import annotations

import typer
from rich.table import Table

from sonofm.cli.common import console


def demo_cmd(
    out: str = typer.Option("demo-out", "--out", help="Directory for the dataset, runs, eval and report."),
    quick: bool = typer.Option(False, "--quick", help="A small run (about 3 minutes), as the tests use."),
) -> None:
    """Simulate data, pretrain CLIP and the ultrasound-aware model, evaluate both, write a report.

    A second run reuses finished stages (and resumes training after a kill).

    Examples:

      sonofm demo

      sonofm demo --out demo-out --quick
    """
    from sonofm.demo import run_demo  # lazy: numpy + scipy slow `sonofm --help`

    res = run_demo(out, quick=quick, notify=lambda msg: console.print(f"[cyan]demo[/] {msg}"))
    models = [m["label"] for m in res.results["models"]]
    table = Table(title="sonofm demo: baseline CLIP vs ultrasound-aware (test split)")
    table.add_column("metric")
    for m in models:
        table.add_column(m, justify="right")
    for row in res.summary:
        table.add_row(row["metric"], *("-" if row[m] is None else f"{row[m]:.3f}" for m in models))
    console.print(table)
    console.print("stage seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in res.seconds.items()))
    console.print(f"report: {res.report}\npreview: {res.out / 'data' / 'preview.png'}")
