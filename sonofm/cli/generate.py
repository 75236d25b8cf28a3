"""The generate verb: a report for, or an answer about, ultrasound images from a generative VLM."""

from __future__ import annotations

from pathlib import Path

import typer


def generate_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Generative VLM model directory (sono_vlm)."),
    image: list[str] = typer.Option(..., "--image", help="Image file (PNG/JPEG/DICOM); repeat for a study."),
    question: str | None = typer.Option(
        None, "--question", "-q", help="Question (default: write the report)."
    ),
    beams: int = typer.Option(1, "--beams", help="Beam-search width (1 = greedy)."),
    sample: bool = typer.Option(False, "--sample", help="Sample (temperature/top-p) instead of greedy/beam."),
    temperature: float = typer.Option(0.7, "--temperature", help="Sampling temperature (with --sample)."),
    top_p: float = typer.Option(0.9, "--top-p", help="Nucleus sampling mass (with --sample)."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed for --sample."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", help="Most tokens to generate."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Disable the KV cache (slower; for checks)."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: cpu)."),
    measurements: str | None = typer.Option(
        None,
        "--measurements",
        help='The study\'s measurements as JSON ({"lvef_pct": 55, ...}) or a JSON file: the report '
        "states them (and the guideline findings they imply), and a closed question on one is "
        "answered from it.",
    ),
    sex: str | None = typer.Option(
        None, "--sex", help="Patient sex (M/F): stated, and used by sex-specific limits."
    ),
) -> None:
    """Write a report for, or answer a question about, one or more ultrasound images.

    Reports state what the model's findings head decided.

    A closed question is answered by the source that covers it (measurements, guideline, head).

    Examples:

      sonofm generate --model runs/vlm/model --image scan.png

      sonofm generate --model runs/vlm/model --image a.png --image b.png --question "Which view?" --beams 3

      sonofm generate --model runs/vlm/model --image a4c.png --measurements '{"lvef_pct": 38}' --sex F
    """
    from sonofm.models.vlm import generate_from_files  # lazy: keeps torch out of `sonofm --help`

    context = None
    if measurements is not None or sex is not None:
        context = {"measurements": _read_measurements(measurements) if measurements else {}, "sex": sex}

    out = generate_from_files(
        model,
        image,
        question,
        device=device,
        max_new_tokens=max_new_tokens,
        num_beams=beams,
        do_sample=sample,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        use_cache=not no_cache,
        checked=True,
        context=context,
    )
    typer.echo(out.text)
    if getattr(out, "answered_by", None):  # on stderr: where a closed answer came from
        typer.echo(
            f"note: answered from the {out.answered_by} (the language model said: {out.draft!r})", err=True
        )
    if out.low_confidence:  # on stderr: the text stays pipeable, the warning is never lost
        typer.echo(f"warning: low confidence ({'; '.join(out.reasons)}); review before use", err=True)


def _read_measurements(value: str) -> dict:
    """--measurements: inline JSON, or the path of a JSON file holding the same object."""
    from sonofm.models.vlm_context import measurements_from_json  # lazy: models import torch; --help must not

    path = Path(value)
    if path.suffix == ".json" and path.is_file():
        return measurements_from_json(path.read_text(), str(path))
    return measurements_from_json(value, "--measurements")
