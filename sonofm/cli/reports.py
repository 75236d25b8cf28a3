"""The report verbs: parse report text into findings, score the parser, sample written studies."""

from __future__ import annotations

import json

import typer

from sonofm.cli.common import console, verb_group

report_app = verb_group(
    "Structured reports: parse report text into findings, or sample studies with written reports.",
    "sonofm report parse report.txt --region thyroid",
    "sonofm report eval tests/reports/data/corpus.jsonl",
    "echo 'Hypoechoic nodule, no shadowing.' | sonofm report parse -",
    "sonofm report sample --region thyroid --n 3 --seed 0",
)


@report_app.command("parse")
def report_parse(
    source: str = typer.Argument(..., help="Report text file, or '-' to read standard input."),
    region: str | None = typer.Option(None, "--region", help="Region the report is from (restricts organs)."),
) -> None:
    """Print the structured JSON (findings, measurements, negation) of a report; list unknown terms.

    Examples:

      sonofm report parse report.txt

      echo 'LVEF 35%. Moderate pericardial effusion.' | sonofm report parse - --region heart
    """
    from sonofm.reports.cli_support import parse_source  # lazy: the report parser is slow to import

    result = parse_source(source, region)
    typer.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    if result.unknown_terms:
        console.print(f"[yellow]unknown terms:[/] {', '.join(result.unknown_terms)}", highlight=False)


@report_app.command("eval")
def report_eval(
    corpus: str = typer.Argument(..., help="JSON-lines corpus: text, region and the expected findings."),
    as_json: bool = typer.Option(False, "--json", help="Print the scores as JSON instead of tables."),
) -> None:
    """Score the parser on hand-written report sentences: precision/recall/F1 per field and region.

    Fields: finding (dimension, tag and status), measurement, laterality, location, organ; plus
    the negated and uncertain findings. Corpus format: `sonofm.reports.corpus`.

    Examples:

      sonofm report eval tests/reports/data/corpus.jsonl

      sonofm report eval my_reports.jsonl --json
    """
    from sonofm.reports.corpus import evaluate, format_result, load_corpus  # lazy: slow to import

    result = evaluate(load_corpus(corpus))
    typer.echo(json.dumps(result.to_dict(), indent=2) if as_json else format_result(result))


@report_app.command("sample")
def report_sample(
    region: str | None = typer.Option(None, "--region", help="Region to sample (default: all regions)."),
    n: int = typer.Option(3, "--n", min=1, help="Number of studies."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same studies and text)."),
) -> None:
    """Print random structured studies and their written reports as JSON lines.

    Examples:

      sonofm report sample --region thyroid --n 3 --seed 0

      sonofm report sample --region heart --n 1
    """
    from sonofm.reports.cli_support import sample_reports  # lazy: the report writer is slow to import

    for rec in sample_reports(region, n, seed):
        typer.echo(json.dumps(rec, ensure_ascii=False))
