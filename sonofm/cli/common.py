"""What every verb module of the CLI shares: the console, option help, the job-launch sequence."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

console = Console(stderr=True)
PRECISION_HELP = "fp32, bf16, fp16 (CUDA only) or auto (bf16 where the hardware has it natively, else fp32)."

# Options the training verbs share, declared once (`epochs: Epochs = None`).
TrainData = Annotated[
    str | None, typer.Option("--data", help="Dataset dir, manifest or shard dir (optional on resume).")
]
Epochs = Annotated[int | None, typer.Option("--epochs", help="Number of epochs.")]
BatchSize = Annotated[int | None, typer.Option("--batch-size", help="Per-process batch size.")]
LearningRate = Annotated[float | None, typer.Option("--lr", help="Peak learning rate.")]
Precision = Annotated[str | None, typer.Option("--precision", help=PRECISION_HELP)]
ResumeFrom = Annotated[str | None, typer.Option("--resume", help="'latest', 'best' or a checkpoint file.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing run in OUT.")]

ResultT = TypeVar("ResultT")


def verb_group(summary: str, *examples: str, **options: Any) -> typer.Typer:
    """A Typer group of commands whose --help is ``summary`` followed by example command lines."""
    heading = "Example:" if len(examples) == 1 else "Examples:"
    text = "\n\n".join((summary, heading, *(f"  {e}" for e in examples)))
    return typer.Typer(help=text, no_args_is_help=True, **options)


def given(**options: Any) -> dict[str, Any]:
    """The named options the user gave (those not None), as config values."""
    return {key: value for key, value in options.items() if value is not None}


def saved_config(out: str) -> Path:
    """Where a run keeps its resolved config (the base of a resumed run)."""
    return Path(out) / "config.yaml"


def launch(
    job: Callable[..., ResultT],
    config_cls: type,
    kind: str,
    values: dict[str, Any],
    out: str,
    preset: str,
    overrides: list[str] | None,
    resume: str | bool | None,
    overwrite: bool,
) -> ResultT | None:
    """Resolve a training job's config and run it into OUT; the result on rank 0, else None.

    The config is preset (of `kind`) <- named options (``values``) <- ``key=value`` overrides.
    Resuming (``resume`` given: a checkpoint name, or True) continues the saved run: its resolved
    config (OUT/config.yaml) is the base, options still override. The job itself applies the
    output-folder rule (``resume``/``overwrite``). Under torchrun only rank 0 reports, so the
    caller prints only when a result comes back.
    """
    from sonofm.config import resolve_config  # lazy: pydantic + yaml would slow `sonofm --help`

    resuming = resume is not None and resume is not False
    saved = saved_config(out)
    base = str(saved) if resuming and saved.is_file() else preset
    config = resolve_config(
        config_cls, preset=base, kind=kind, values=values, overrides=list(overrides or [])
    )
    result = job(config, out, resume=resume, overwrite=overwrite)
    from sonofm.train.distributed import cleanup  # lazy: torch stays out of `sonofm --help`

    cleanup()  # under torchrun: every rank leaves the process group together (no exit-time hang)
    if int(os.environ.get("RANK", "0")) != 0:
        return None
    return result


def print_outputs(**paths: object) -> None:
    """Print where a job's outputs went, one aligned `name: path` line each."""
    console.print("\n".join(f"  {name + ':':<9}{path}" for name, path in paths.items()))
