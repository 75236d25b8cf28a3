"""Evaluation verbs: the eval suite (scores with CIs, model comparison) and the diagnose table."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from sonofm.atomic import atomic_write_text
from sonofm.cli.common import console


def eval_cmd(
    model: list[str] = typer.Option(
        ..., "--model", "-m", help="Model directory (repeat to compare: each is tested against the first)."
    ),
    data: str = typer.Option(..., "--data", help="Dataset directory, manifest file or shard directory."),
    out: str = typer.Option(
        ..., "--out", help="Output dir: results.json, results.md, report.html, eval_log.jsonl."
    ),
    suite: str = typer.Option("default", "--suite", help="Suite preset (default, quick) or a YAML file."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: cuda if any)."),
    precision: str = typer.Option("fp32", "--precision", help="Embedding precision: fp32, bf16 or fp16."),
    n_boot: int | None = typer.Option(None, "--n-boot", help="Bootstrap resamples (overrides the suite)."),
    cache_dir: str | None = typer.Option(
        None, "--cache-dir", help="Embedding cache (default $SONOFM_CACHE_DIR or ~/.cache/sonofm)."
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write cached embeddings."),
    no_html: bool = typer.Option(False, "--no-html", help="Skip report.html."),
    workers: int = typer.Option(0, "--workers", help="DataLoader worker processes for image decoding."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an --out folder that holds another evaluation."
    ),
) -> None:
    """Evaluate a model (zero-shot, retrieval, probes) with 95% bootstrap CIs; compare models.

    Re-running the same evaluation into --out redoes it there; an --out that holds another
    evaluation (other models, data, suite, --n-boot or --precision) is refused unless --overwrite.

    Examples:

      sonofm eval --model runs/clip/model --data data/sim --out eval/clip

      sonofm eval --model runs/clip/model --data data/sim --suite quick --out eval/quick

      sonofm eval --model runs/a/model --model runs/b/model --data data/sim --out eval/a-vs-b
    """
    from sonofm.eval.cli_support import EvalProgress  # lazy: keeps `sonofm --help` fast
    from sonofm.eval.runner import load_suite, run_suite  # lazy: keeps torch out of `sonofm --help`

    s = load_suite(suite)
    with EvalProgress(console, len(s.tasks), len(model)) as progress:
        run_suite(
            model,
            data,
            out,
            s,
            device=device,
            precision=precision,
            n_boot=n_boot,
            cache_dir=False if no_cache else cache_dir,
            workers=workers,
            html=not no_html,
            on_event=progress,
            overwrite=overwrite,
        )
    console.print(f"[green]evaluated[/] {len(model)} model(s) on {len(s.tasks)} tasks (suite {s.name})")
    for name in ("results.json", "results.md", *(() if no_html else ("report.html",)), "eval_log.jsonl"):
        console.print(f"  {name}: {out}/{name}")


def diagnose_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Model directory."),
    data: str = typer.Option(..., "--data", help="Dataset directory or manifest file."),
    out: str | None = typer.Option(None, "--out", help="Write the full diagnostic as JSON here."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: cuda if any)."),
) -> None:
    """Is text, image or data the limit? Zero-shot scores beside their floor and ceilings.

    Prints, per zero-shot task, an untrained model of the same architecture (floor), the model,
    and the caption oracle (each test image replaced by its own caption's embedding: the best
    any image tower could do with this text side); per lesion attribute, the image-side bounds
    (linear probe on the model's image embeddings, supervised head when the model has one).

    Examples:

      sonofm diagnose --model runs/clip/model --data data/sim

      sonofm diagnose --model runs/clip/model --data data/sim --out runs/clip/diagnose.json
    """
    from sonofm.eval.diagnose import diagnose  # lazy: torch would slow `sonofm --help`

    result = diagnose(model, data, device=device)
    columns = list(result["scores"])
    table = Table(title=f"zero-shot diagnostic: {model} on {result['n_test']} {result['split']} images")
    table.add_column("metric")
    for c in columns:
        table.add_column(c, justify="right")
    for row in result["rows"]:
        table.add_row(row["metric"], *(_fmt(row.get(c)) for c in columns))
    console.print(table)
    attrs = Table(title="lesion attributes: zero-shot AUC vs image-side bounds")
    bound_cols = ["model", "caption oracle", "linear_probe_auc", "head_auc"]
    attrs.add_column("tag")
    for c in bound_cols:
        attrs.add_column(c.replace("_auc", "").replace("_", " "), justify="right")
    for tag, entry in sorted(result["attributes"].items()):
        attrs.add_row(tag, *(_fmt(entry.get(c)) for c in bound_cols))
    console.print(attrs)
    if out:
        atomic_write_text(out, json.dumps(result, indent=2))
        console.print(f"  diagnostic: {out}")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
