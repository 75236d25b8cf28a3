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


@app.command("demo")
def demo(
    out: str = typer.Option("demo-out", "--out", help="Directory for the dataset, runs, eval and report."),
    quick: bool = typer.Option(False, "--quick", help="A small run (about 3 minutes), as the tests use."),
) -> None:
    """Simulate data, pretrain CLIP and the ultrasound-aware model, evaluate both, write a report.

    A second run reuses finished stages (and resumes training after a kill).

    Examples:

      sonofm demo

      sonofm demo --out demo-out --quick
    """
    from rich.table import Table

    from sonofm.demo import run_demo

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


ingest_app = typer.Typer(
    help=(
        "Turn scanner DICOM or a downloaded public dataset into a sonofm dataset directory.\n\n"
        "Examples:\n\n"
        "  sonofm ingest dicom /data/pacs-export --out data/real --reports reports.csv --frames ed-es\n\n"
        "  sonofm ingest busi Dataset_BUSI_with_GT --out data/busi"
    ),
    no_args_is_help=True,
)
app.add_typer(ingest_app, name="ingest")


@ingest_app.command("dicom")
def ingest_dicom_cmd(
    src: str = typer.Argument(..., help="Folder of DICOM files (walked recursively) or one file."),
    out: str = typer.Option(..., "--out", help="Output dataset directory (resumes if it exists)."),
    reports: str | None = typer.Option(
        None, "--reports", help="CSV/JSONL: accession_number or study_instance_uid -> report text."
    ),
    frames: str = typer.Option("all", "--frames", help="Cine frames to keep: all, ed-es or a number N."),
    keep_doppler: bool = typer.Option(False, "--keep-doppler", help="Keep colour-Doppler images (as RGB)."),
    key_file: str | None = typer.Option(
        None, "--key-file", help="Secret key for pseudonyms (default: created in OUT/.sonofm-deid.key)."
    ),
) -> None:
    """De-identify and convert ultrasound DICOM into a dataset (PNGs + de-identified DICOM + manifest).

    Headers follow the DICOM PS3.15 Basic Profile (keyed pseudonyms, per-patient date shift),
    burned-in text and the scanner UI are masked, and every change goes to OUT/deid_audit.jsonl.
    Bad files are skipped with a reason (OUT/ingest_report.json); a killed job resumes.

    Example:

      sonofm ingest dicom /data/export --out data/real --frames ed-es --reports reports.csv
    """
    from rich.progress import Progress

    from sonofm.data.dicom.ingest import ingest_dicom

    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("ingesting", total=None)

        def tick(i: int, n: int, name: str) -> None:
            bar.update(task, completed=i, total=n, description=f"ingesting {name[-40:]}")

        rep = ingest_dicom(
            src,
            out,
            reports=reports,
            frames=frames,
            keep_doppler=keep_doppler,
            key_file=key_file,
            progress=tick,
        )
    console.print(f"[green]{rep.images} images[/] from {rep.ingested_files}/{rep.files} files -> {out}")
    if rep.skipped:
        console.print("skipped: " + ", ".join(f"{k}={v}" for k, v in rep.skipped.items()))
    console.print(f"report: {out}/ingest_report.json  audit: {out}/deid_audit.jsonl")


def _make_import_cmd(fmt: str, what: str) -> None:
    def cmd(
        src: str = typer.Argument(..., help=f"The downloaded {what} folder (or file)."),
        out: str = typer.Option(..., "--out", help="Output dataset directory."),
    ) -> None:
        from sonofm.data.importers import IMPORTERS

        res = IMPORTERS[fmt](src, out)
        console.print(f"[green]{res.images} images[/] -> {out}")
        if res.skipped:
            console.print("skipped: " + ", ".join(f"{k}={v}" for k, v in res.skipped.items()))

    cmd.__doc__ = (
        f"Import {what} into a sonofm dataset directory.\n\n"
        f"Example:\n\n  sonofm ingest {fmt} SRC --out data/{fmt}"
    )
    ingest_app.command(fmt)(cmd)


for _fmt, _what in (
    ("busi", "BUSI (benign/malignant/normal folders with _mask PNGs)"),
    ("tn3k", "TN3K (trainval-image/, test-image/ + masks)"),
    ("ddti", "DDTI (image/ or p_image/ + masks)"),
    ("ultrabench", "ultrabench dataset (<name>_v<ver> with train/validation/test.json)"),
    ("echovlm", "EchoVLM / ShareGPT instruction JSON"),
    ("us365k", "US-365K (images + JSON/JSONL captions)"),
    ("camus", "CAMUS (database_nifti, needs nibabel)"),
    ("echonet", "EchoNet-Dynamic (FileList.csv, VolumeTracings.csv, Videos/, needs PyAV)"),
):
    _make_import_cmd(_fmt, _what)


@app.command("eval")
def eval_cmd(
    model: list[str] = typer.Option(
        ..., "--model", "-m", help="Model directory (repeat to compare: each is tested against the first)."
    ),
    data: str = typer.Option(..., "--data", help="Dataset directory or manifest file."),
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
) -> None:
    """Evaluate a model (zero-shot, retrieval, probes) with 95% bootstrap CIs; compare models.

    Examples:

      sonofm eval --model runs/clip/model --data data/sim --out eval/clip

      sonofm eval --model runs/clip/model --data data/sim --suite quick --out eval/quick

      sonofm eval --model runs/a/model --model runs/b/model --data data/sim --out eval/a-vs-b
    """
    from sonofm.eval.cli_support import EvalProgress
    from sonofm.eval.runner import load_suite, run_suite

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
        )
    console.print(f"[green]evaluated[/] {len(model)} model(s) on {len(s.tasks)} tasks (suite {s.name})")
    for name in ("results.json", "results.md", *(() if no_html else ("report.html",)), "eval_log.jsonl"):
        console.print(f"  {name}: {out}/{name}")


data_app = typer.Typer(
    help=(
        "Dataset utilities.\n\n"
        "Examples:\n\n"
        "  sonofm data shard data/sim --out data/sim-shards --shard-size 1000"
    ),
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")


@data_app.command("shard")
def data_shard(
    data: str = typer.Argument(..., help="Dataset directory (or manifest file)."),
    out: str = typer.Option(..., "--out", help="New directory for the WebDataset shards."),
    shard_size: int = typer.Option(1000, "--shard-size", help="Samples per tar shard."),
) -> None:
    """Pack a dataset directory into WebDataset tar shards (per split) for streaming at scale.

    Examples:

      sonofm data shard data/sim --out data/sim-shards

      sonofm data shard data/sim --out data/sim-shards --shard-size 5000
    """
    from sonofm.data.shards import export_shards

    index = export_shards(data, out, shard_size=shard_size)
    for split, info in index["splits"].items():
        console.print(f"{split}: {info['samples']} samples in {len(info['shards'])} shards")
    if index["skipped"]:
        console.print(f"[yellow]skipped {len(index['skipped'])} unreadable samples (see shards.json)[/]")
    console.print(f"shards: {out}")


report_app = typer.Typer(
    help=(
        "Structured reports: parse report text into findings, or sample studies with written reports.\n\n"
        "Examples:\n\n"
        "  sonofm report parse report.txt --region thyroid\n\n"
        "  echo 'Hypoechoic nodule, no shadowing.' | sonofm report parse -\n\n"
        "  sonofm report sample --region thyroid --n 3 --seed 0"
    ),
    no_args_is_help=True,
)
app.add_typer(report_app, name="report")


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
    import json

    from sonofm.reports.cli_support import parse_source

    result = parse_source(source, region)
    typer.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    if result.unknown_terms:
        console.print(f"[yellow]unknown terms:[/] {', '.join(result.unknown_terms)}", highlight=False)


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
    import json

    from sonofm.reports.cli_support import sample_reports

    for rec in sample_reports(region, n, seed):
        typer.echo(json.dumps(rec, ensure_ascii=False))


@app.command("pretrain")
def pretrain(
    out: str = typer.Option(..., "--out", help="Run directory: model/, checkpoints/, metrics.jsonl."),
    data: str | None = typer.Option(None, "--data", help="Dataset dir or manifest (optional on resume)."),
    preset: str = typer.Option("tiny", "--preset", help="Preset: tiny, small, base or a YAML file."),
    loss: str | None = typer.Option(
        None,
        "--loss",
        help="clip, siglip, usclip (soft CLIP + semantic + graph), echo (CLIP + view + negation) "
        "or weighted terms, e.g. clip+semantic:0.5+view:1.",
    ),
    epochs: int | None = typer.Option(None, "--epochs", help="Number of epochs."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Per-process batch size."),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate."),
    precision: str | None = typer.Option(None, "--precision", help="fp32, bf16 or fp16 (CUDA only)."),
    resume: str | None = typer.Option(None, "--resume", help="'latest', 'best' or a checkpoint file."),
    overrides: list[str] | None = typer.Argument(None, help="key=value overrides (train.lr=1e-4)."),
) -> None:
    """Contrastive image-text pretraining (CLIP or SigLIP) of a dual encoder.

    Examples:

      sonofm pretrain --data data/sim --out runs/clip --preset tiny

      sonofm pretrain --data data/sim --out runs/siglip --loss siglip --precision bf16 train.accum_steps=4

      sonofm pretrain --out runs/clip --resume latest

      torchrun --nproc_per_node 2 -m sonofm.cli pretrain --data data/sim --out runs/ddp
    """
    import os
    from pathlib import Path

    from sonofm.config import PretrainConfig, resolve_config
    from sonofm.train.pretrain import pretrain as run_pretrain

    values: dict = {"data": {}, "train": {}, "loss": {}}
    if data is not None:
        values["data"]["path"] = data
    if loss is not None:
        values["loss"]["name"] = loss
    for key, value in (("epochs", epochs), ("batch_size", batch_size), ("lr", lr), ("precision", precision)):
        if value is not None:
            values["train"][key] = value
    saved = Path(out) / "config.yaml"
    # Resuming continues the saved run: its resolved config is the base, options still override.
    base = str(saved) if resume is not None and saved.is_file() else preset
    config = resolve_config(PretrainConfig, preset=base, values=values, overrides=list(overrides or []))
    result = run_pretrain(config, out, resume=resume)
    if int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun only rank 0 reports
    fit = result.fit
    console.print(
        f"[green]pretrained[/] {fit.step} steps, {fit.epoch} epochs"
        + (" (early stop)" if fit.stopped_early else "")
        + (f", {fit.skipped_samples} undecodable images skipped" if fit.skipped_samples else "")
    )
    for key in ("val/i2t_r1", "val/t2i_r1", "val/r_mean"):
        if key in fit.last_val:
            console.print(f"  {key} = {fit.last_val[key]:.3f}")
    console.print(f"  model:   {result.model_dir}\n  metrics: {result.metrics}\n  config:  {saved}")


@app.command("simulate")
def simulate(
    out: str = typer.Option(..., "--out", help="Dataset directory to create, or to resume after a kill."),
    n: int = typer.Option(..., "--n", help="Total number of images (whole patients; the last is truncated)."),
    regions: str = typer.Option(
        None, "--regions", help="Comma-separated regions (default: every registered region, echo included)."
    ),
    size: int = typer.Option(224, "--size", help="Image side in pixels (square)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed and N give byte-identical files."),
    workers: int = typer.Option(1, "--workers", help="Worker processes (does not change the output)."),
    splits: str = typer.Option("0.8,0.1,0.1", "--splits", help="train,val,test fractions (per patient)."),
    preview: bool = typer.Option(False, "--preview", help="Also write preview.png, a contact sheet."),
    burned_in_text: bool = typer.Option(
        False, "--burned-in-text", help="Burn fake scanner text (labels, patient ID, date) into the pixels."
    ),
    doppler_box: bool = typer.Option(False, "--doppler-box", help="Add a colour-Doppler box (RGB images)."),
    plugin: list[str] = typer.Option(
        [], "--plugin", help="Python module to import first, e.g. one registering extra regions (repeatable)."
    ),
) -> None:
    """Simulate an ultrasound dataset with exact labels (images, masks, reports, manifest, card).

    Examples:

      sonofm simulate --out data/sim --n 2000 --preview

      sonofm simulate --out data/thyroid --n 500 --regions thyroid,breast --size 128 --workers 2

      sonofm simulate --out data/deid --n 100 --burned-in-text --doppler-box
    """
    from rich.table import Table

    from sonofm.data.card import read_card
    from sonofm.sim.generator import simulate_dataset

    path = simulate_dataset(
        out,
        n,
        regions=regions,
        size=size,
        seed=seed,
        workers=workers,
        splits=[s.strip() for s in splits.split(",")],
        preview=preview,
        realism={"burned_in_text": burned_in_text, "doppler_box": doppler_box},
        progress=True,
        plugins=plugin,
    )
    card = read_card(path)
    table = Table(title=f"{card['num_images']} images, {card['num_patients']} patients")
    table.add_column("region")
    for split in ("train", "val", "test"):
        table.add_column(split, justify="right")
    names = ("train", "val", "test")
    for region in card["counts"]["region"]:
        table.add_row(region, *(str(card["splits"][s]["region"].get(region, 0)) for s in names))
    table.add_row("[bold]patients", *(str(card["splits"][s]["patients"]) for s in names))
    console.print(table)
    console.print(f"dataset: {path}  (manifest.parquet, images/, masks/, dataset.json)")
    if preview:
        console.print(f"preview: {path / 'preview.png'}")


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


if __name__ == "__main__":
    main()
