"""Data verbs: simulate a dataset, ingest DICOM or import a public one, shard a dataset dir."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from sonofm.cli.common import console, verb_group
from sonofm.errors import UserError


def simulate_cmd(
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
    domain_randomization: bool = typer.Option(
        False,
        "--domain-randomization",
        help="Redraw scanner and lesion rendering nuisances per image (labels kept).",
    ),
    plugin: list[str] = typer.Option(
        [], "--plugin", help="Python module to import first, e.g. one registering extra regions (repeatable)."
    ),
    clean_looks: int = typer.Option(
        0, "--clean-looks", help="Also write despeckling targets clean/<id>.png (K compounded speckle looks)."
    ),
) -> None:
    """Simulate an ultrasound dataset with exact labels (images, masks, reports, manifest, card).

    Examples:

      sonofm simulate --out data/sim --n 2000 --preview

      sonofm simulate --out data/thyroid --n 500 --regions thyroid,breast --size 128 --workers 2

      sonofm simulate --out data/deid --n 100 --burned-in-text --doppler-box
    """
    from sonofm.data.card import read_card  # lazy: pandas would slow `sonofm --help`
    from sonofm.sim.generator import simulate_dataset  # lazy: numpy + simulator slow `sonofm --help`

    path = simulate_dataset(
        out,
        n,
        regions=regions,
        size=size,
        seed=seed,
        workers=workers,
        splits=[s.strip() for s in splits.split(",")],
        preview=preview,
        realism={
            "burned_in_text": burned_in_text,
            "doppler_box": doppler_box,
            "domain_randomization": domain_randomization,
        },
        progress=True,
        plugins=plugin,
        clean_looks=clean_looks,
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


ingest_app = verb_group(
    "Turn scanner DICOM or a downloaded public dataset into a sonofm dataset directory.",
    "sonofm ingest dicom /data/pacs-export --out data/real --reports reports.csv --frames ed-es",
    "sonofm ingest busi Dataset_BUSI_with_GT --out data/busi",
)


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
    new_key: bool = typer.Option(False, "--new-key", help="Create the --key-file (random, mode 0600)."),
    append: bool = typer.Option(False, "--append", help="Add these files to an existing OUT (same key)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT."),
) -> None:
    """De-identify and convert ultrasound DICOM into a dataset (PNGs + de-identified DICOM + manifest).

    Headers follow the DICOM PS3.15 Basic Profile (keyed pseudonyms, per-patient date shift),
    burned-in text and the scanner UI are masked, and every change goes to OUT/deid_audit.jsonl.
    Bad files are skipped with a reason (OUT/ingest_report.json); a killed job resumes. Sources
    are named by keyed hashes, never by file name (map them back with `sonofm ingest locate`).

    Examples:

      sonofm ingest dicom /data/export --out data/real --frames ed-es --reports reports.csv

      sonofm ingest dicom /data/export --out data/real --key-file ~/deid.key --new-key

      sonofm ingest dicom /data/export2 --out data/real --key-file ~/deid.key --append
    """
    from rich.progress import Progress  # lazy: keeps `sonofm --help` fast

    from sonofm.data.dicom.ingest import ingest_dicom  # lazy: scipy would slow `sonofm --help`

    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("ingesting", total=None)

        def tick(i: int, n: int, name: str) -> None:
            bar.update(task, completed=i, total=n, description=f"ingesting file {i}/{n}")  # never a name

        rep = ingest_dicom(
            src,
            out,
            reports=reports,
            frames=frames,
            keep_doppler=keep_doppler,
            key_file=key_file,
            new_key=new_key,
            append=append,
            overwrite=overwrite,
            progress=tick,
        )
    if rep.new_images == 0:
        raise UserError(
            f"no image was ingested from {src} ({rep.files} files; skipped: {rep.reasons()}); "
            f"see {out}/ingest_report.json"
        )
    console.print(f"[green]{rep.images} images[/] from {rep.ingested_files}/{rep.files} files -> {out}")
    if rep.skipped:
        console.print("skipped: " + ", ".join(f"{k}={v}" for k, v in rep.skipped.items()))
    console.print(f"report: {out}/ingest_report.json  audit: {out}/deid_audit.jsonl")


@ingest_app.command("locate")
def ingest_locate_cmd(
    src: str = typer.Argument(..., help="The source folder (or file) that was ingested."),
    out: str = typer.Option(..., "--out", help="The dataset directory it was ingested into."),
    key_file: str | None = typer.Option(
        None, "--key-file", help="The key it was ingested with (default: OUT/.sonofm-deid.key)."
    ),
) -> None:
    """Map the keyed source hashes of OUT back to the files of SRC (needs the key): hash, status, path.

    Example:

      sonofm ingest locate /data/export --out data/real --key-file ~/deid.key
    """
    from sonofm.data.dicom.deid import read_key  # lazy: keeps `sonofm --help` fast
    from sonofm.data.dicom.ingest import locate_sources  # lazy: scipy would slow `sonofm --help`

    key = read_key(key_file or Path(out) / ".sonofm-deid.key")
    report = Path(out) / "ingest_report.json"
    skipped = {}
    if report.is_file():
        skipped = {s["source"]: s["reason"] for s in json.loads(report.read_text())["skipped_files"]}
    for sid, rel in locate_sources(src, key):
        typer.echo(f"{sid}\t{skipped.get(sid, '-')}\t{rel}")


def _make_import_cmd(fmt: str, what: str) -> None:
    def cmd(
        src: str = typer.Argument(..., help=f"The downloaded {what} folder (or file)."),
        out: str = typer.Option(..., "--out", help="Output dataset directory."),
    ) -> None:
        from sonofm.data.importers import IMPORTERS  # lazy: numpy would slow `sonofm --help`

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


data_app = verb_group(
    "Dataset utilities.", "sonofm data shard data/sim --out data/sim-shards --shard-size 1000"
)


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
    from sonofm.data.shards import export_shards  # lazy: keeps torch out of `sonofm --help`

    index = export_shards(data, out, shard_size=shard_size)
    for split, info in index["splits"].items():
        console.print(f"{split}: {info['samples']} samples in {len(info['shards'])} shards")
    if index["skipped"]:
        console.print(f"[yellow]skipped {len(index['skipped'])} unreadable samples (see shards.json)[/]")
    console.print(f"shards: {out}")
