"""The `sonofm` command line: one verb per job, each a thin call into the library."""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console

from sonofm import __version__
from sonofm.errors import UserError

console = Console(stderr=True)
app = typer.Typer(
    name="sonofm",
    help=(
        "Ultrasound vision-language foundation models: simulate or ingest data, pretrain, "
        "evaluate, adapt and serve.\n\n"
        "Examples:\n\n"
        "  sonofm simulate --out data/sim --n 2000 --preview\n\n"
        "  sonofm pretrain --data data/sim --out runs/clip --preset tiny\n\n"
        "  sonofm demo --out demo-out --quick"
    ),
    no_args_is_help=True,
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


# Subcommands register themselves below. Keep each one thin: parse, call one library function,
# print where the outputs went.
# --- commands ---


def main() -> None:
    """Console-script entry point: user errors become one red line and exit code 2."""
    try:
        app()
    except UserError as err:
        if _state["debug"]:
            raise
        console.print(f"[bold red]error:[/] {err}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
