"""The `sonofm` command line: one verb per job, each a thin call into the library.

One module per verb group; this file builds the Typer `app`, registers the verbs and holds the
console-script entry point `main`:

    data.py      simulate, ingest (dicom, locate, public datasets), data shard
    train.py     pretrain, ssl, finetune, train-vlm (one launch sequence: common.launch)
    eval.py      eval, diagnose
    generate.py  generate
    serve.py     serve, index (build, search), export onnx
    demo.py      demo
    reports.py   report (parse, eval, sample)
    common.py    the console, shared option help, the job-launch and output-printing helpers

Keep each command thin: parse, call one library function, print where the outputs went.
"""

from __future__ import annotations

import logging
import sys

import typer

from sonofm import __version__
from sonofm.cli.common import console, verb_group
from sonofm.cli.data import data_app, ingest_app, simulate_cmd
from sonofm.cli.demo import demo_cmd
from sonofm.cli.eval import diagnose_cmd, eval_cmd
from sonofm.cli.generate import generate_cmd
from sonofm.cli.reports import report_app
from sonofm.cli.serve import export_app, index_app, serve_cmd
from sonofm.cli.train import finetune_cmd, pretrain_cmd, ssl_cmd, train_vlm_cmd
from sonofm.errors import UserError

app = verb_group(
    "Ultrasound vision-language foundation models: simulate or ingest data, pretrain, "
    "evaluate, adapt and serve.",
    "sonofm simulate --out data/sim --n 2000 --preview",
    "sonofm pretrain --data data/sim --out runs/clip --preset tiny",
    "sonofm demo --out demo-out --quick",
    name="sonofm",
    add_completion=False,
    pretty_exceptions_enable=False,
)

_state = {"debug": False}


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"sonofm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks and debug logs."),
) -> None:
    _state["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


# `sonofm --help` lists commands in this order, then the groups in theirs.
for _name, _command in (
    ("finetune", finetune_cmd),
    ("train-vlm", train_vlm_cmd),
    ("serve", serve_cmd),
    ("ssl", ssl_cmd),
    ("generate", generate_cmd),
    ("demo", demo_cmd),
    ("eval", eval_cmd),
    ("diagnose", diagnose_cmd),
    ("pretrain", pretrain_cmd),
    ("simulate", simulate_cmd),
):
    app.command(_name)(_command)
for _name, _group in (
    ("index", index_app),
    ("export", export_app),
    ("ingest", ingest_app),
    ("data", data_app),
    ("report", report_app),
):
    app.add_typer(_group, name=_name)


def main() -> None:
    """Console-script entry point: user errors become one red line and exit code 2."""
    try:
        app()
    except UserError as err:
        if _state["debug"]:
            raise
        # soft_wrap: a long message stays one line when stderr is a pipe/file (logs, CI greps)
        console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)


__all__ = ["app", "main"]
