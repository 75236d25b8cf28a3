"""The `sonofm` command line: one verb per job, each a thin call into the library."""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console

from sonofm import __version__
from sonofm.errors import UserError

console = Console(stderr=True)
PRECISION_HELP = "fp32, bf16, fp16 (CUDA only) or auto (bf16 where the hardware has it natively, else fp32)."

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


@app.command("finetune")
def finetune_cmd(
    out: str = typer.Option(..., "--out", help="Run dir: seed-<s>/model, results.json, report.html."),
    data: str | None = typer.Option(
        None, "--data", help="Dataset dir, manifest or shard dir (optional on resume)."
    ),
    model: str | None = typer.Option(
        None, "--model", help="Model preset (tiny, small, ...) or a sonofm model dir (SSL/CLIP run's model/)."
    ),
    task: str | None = typer.Option(
        None, "--task", help="segment, classify, landmarks, ef, detect or enhance."
    ),
    adapter: str | None = typer.Option(None, "--adapter", help="ht (hybrid tuning), lora, linear or full."),
    fraction: float | None = typer.Option(None, "--fraction", help="Share of training PATIENTS labelled."),
    seeds: str | None = typer.Option(None, "--seeds", help="Comma-separated seeds, e.g. 1,2,3."),
    preset: str = typer.Option("tiny", "--preset", help="Fine-tuning preset: tiny, base or a YAML file."),
    epochs: int | None = typer.Option(None, "--epochs", help="Number of epochs."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Per-process batch size."),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate."),
    precision: str | None = typer.Option(None, "--precision", help=PRECISION_HELP),
    resume: bool = typer.Option(False, "--resume", help="Keep finished seeds, resume an interrupted one."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run in OUT."),
    overrides: list[str] | None = typer.Argument(
        None, help="key=value overrides (task_options.target=view, task_options.labels=[3,4,5])."
    ),
) -> None:
    """Fine-tune an image tower on a downstream task with an adapter; mean +- std over seeds.

    Examples:

      sonofm finetune --model tiny --data data/sim --task segment --adapter ht --out runs/seg

      sonofm finetune --model runs/ssl/model --data data/sim --task classify --adapter lora
      --fraction 0.1 --seeds 1,2,3 --out runs/view task_options.target=view

      sonofm finetune --model tiny --data data/sim --task segment --adapter full --out runs/lv
      task_options.labels=[3,4,5]

      sonofm eval --model runs/seg/seed-1/model --data data/sim --suite finetune --out runs/seg/eval
    """
    import os
    from pathlib import Path

    from sonofm.config import resolve_config
    from sonofm.errors import UserError
    from sonofm.finetune.job import FinetuneConfig, finetune

    values: dict = {"data": {}, "train": {}}
    if data is not None:
        values["data"]["path"] = data
    if fraction is not None:
        values["data"]["fraction"] = fraction
    for key, value in (("model", model), ("task", task), ("adapter", adapter)):
        if value is not None:
            values[key] = value
    if seeds is not None:
        try:
            values["seeds"] = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError as e:
            raise UserError(f"--seeds must be comma-separated integers, got {seeds!r}") from e
    for key, value in (("epochs", epochs), ("batch_size", batch_size), ("lr", lr), ("precision", precision)):
        if value is not None:
            values["train"][key] = value
    saved = Path(out) / "config.yaml"
    base = str(saved) if resume and saved.is_file() else preset
    config = resolve_config(
        FinetuneConfig, preset=base, kind="finetune", values=values, overrides=list(overrides or [])
    )
    result = finetune(config, out, resume=resume, overwrite=overwrite)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    s = result.summary
    console.print(f"[green]finetune[/] {s['task']} / {s['adapter']}, seeds {s['seeds']}")
    for name, v in s["test"].items():
        if v["mean"] is not None and name != "n_images":
            console.print(f"  test {name} = {v['mean']:.4f} +- {v['std']:.4f}")
    console.print(
        f"  models:  {Path(out)}/seed-<s>/model\n  results: {result.results}\n  report:  {result.report}"
    )


@app.command("train-vlm")
def train_vlm_cmd(
    out: str = typer.Option(..., "--out", help="Run directory: model/, stage1/, stage2/, conversations/."),
    data: str | None = typer.Option(None, "--data", help="Dataset dir or manifest to build chats from."),
    sharegpt: str | None = typer.Option(None, "--sharegpt", help="Train on an EchoVLM ShareGPT JSON."),
    image_from: str | None = typer.Option(
        None, "--image-from", help="Model dir whose image tower (.visual) the VLM starts from."
    ),
    moe: bool | None = typer.Option(
        None, "--moe/--dense", help="Dual-path MoE LM, or the dense twin at equal active parameters."
    ),
    stage: str | None = typer.Option(None, "--stage", help="1 (MoE + projector), 2 (LoRA + MoE) or both."),
    preset: str = typer.Option("train-tiny", "--preset", help="VLM training preset or a YAML file."),
    resume: str | None = typer.Option(None, "--resume", help="'latest': skip finished stages, go on."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run in OUT."),
    overrides: list[str] | None = typer.Argument(None, help="key=value overrides (stage2.lr=1e-4)."),
) -> None:
    """Train the generative VLM (image tower -> projector -> MoE LM) in EchoVLM's two stages.

    Examples:

      sonofm train-vlm --data data/sim --out runs/vlm

      sonofm train-vlm --data data/sim --out runs/vlm-dense --dense --image-from runs/clip/model

      sonofm train-vlm --data data/sim --out runs/vlm2 --stage 2 init_from=runs/vlm/stage1/model

      sonofm train-vlm --out runs/vlm --resume latest
    """
    import os
    from pathlib import Path

    from sonofm.config import resolve_config
    from sonofm.vlm.train import VLMTrainConfig, train_vlm

    values: dict = {"data": {}}
    if data is not None:
        values["data"]["path"] = data
    if sharegpt is not None:
        values["data"]["sharegpt"] = sharegpt
    if image_from is not None:
        values["image_from"] = image_from
    if moe is not None:
        values["moe"] = moe
    if stage is not None:
        if stage not in ("1", "2", "both"):
            raise UserError(f"--stage {stage!r}: expected 1, 2 or both")
        values["stage"] = stage
    saved = Path(out) / "config.yaml"
    base = str(saved) if resume is not None and saved.is_file() else preset
    extra = list(overrides or [])
    config = resolve_config(VLMTrainConfig, preset=base, kind="vlm", values=values, overrides=extra)
    result = train_vlm(config, out, resume=resume, overwrite=overwrite)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    for name, fit in result.stages.items():
        val = fit.last_val.get("val/lm_loss")
        console.print(
            f"[green]stage {name}[/] {fit.step} steps, {fit.data.get('epochs_done', fit.epoch):g} epochs"
            + (f", val lm_loss {val:.3f}" if val is not None else "")
        )
    console.print(f"  model:   {result.model_dir}\n  routing: {out}/stage*/routing.json\n  config:  {saved}")


@app.command("serve")
def serve_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Dual-encoder model dir (or ONNX export dir)."),
    vlm: str | None = typer.Option(None, "--vlm", help="Generative VLM model dir: adds a draft report."),
    seg: str | None = typer.Option(None, "--seg", help="Segmentation task-model dir: adds an overlay."),
    index: str | None = typer.Option(None, "--index", help="Case index dir (sonofm index build)."),
    onnx: bool = typer.Option(False, "--onnx", help="Run the encoders on onnxruntime (exports if needed)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    token: str | None = typer.Option(
        None, "--token", envvar="SONOFM_TOKEN", help="Require 'Authorization: Bearer TOKEN' on /api/*."
    ),
    max_upload_mb: float = typer.Option(20.0, "--max-upload-mb", help="Largest upload accepted (MB)."),
    cors: list[str] = typer.Option([], "--cors", help="Allowed CORS origin (repeatable); off by default."),
    batch_max: int = typer.Option(16, "--batch-max", help="Most images per model forward."),
    batch_wait_ms: float = typer.Option(5.0, "--batch-wait-ms", help="How long a batch waits to fill."),
    store_uploads: str | None = typer.Option(
        None, "--store-uploads", help="Keep de-identified uploads (PNG + JSON) here; default: never stored."
    ),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: cuda if any)."),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads (default: torch's)."),
) -> None:
    """Serve the web page and JSON API: findings, similar cases, draft report, overlay.

    Open http://HOST:PORT/ for the page, /docs for the API. Logs are JSON lines on stderr.

    Examples:

      sonofm serve --model runs/clip/model --index idx/sim

      sonofm serve --model runs/clip/model --vlm runs/vlm/model --seg runs/seg/seed-1/model --port 8080

      sonofm serve --model export/clip-onnx --onnx --token s3cret --max-upload-mb 50 --cors https://pacs.example.org
    """
    import uvicorn

    from sonofm.serve.app import configure_json_logging, create_app
    from sonofm.serve.settings import ServeSettings

    try:
        settings = ServeSettings(
            model=model, vlm=vlm, seg=seg, index=index, onnx=onnx, token=token, max_upload_mb=max_upload_mb,
            cors_origins=list(cors), batch_max=batch_max, batch_wait_ms=batch_wait_ms,
            store_uploads=store_uploads, device=device, threads=threads,
        )
    except ValueError as e:  # pydantic ValidationError: one line per bad option
        raise UserError(f"invalid serve options: {e}") from e
    configure_json_logging()
    console.print(f"[cyan]serve[/] loading {model} ...")
    api = create_app(settings)
    console.print(f"[cyan]serve[/] http://{host}:{port}/  (API docs: /docs; stop with Ctrl+C)")
    uvicorn.run(api, host=host, port=port, log_config=None, access_log=False)


@app.command("ssl")
def ssl_cmd(
    out: str = typer.Option(..., "--out", help="Run directory: model/, checkpoints/, metrics.jsonl."),
    data: str | None = typer.Option(
        None, "--data", help="Dataset dir, manifest or shard dir (optional on resume)."
    ),
    preset: str = typer.Option("tiny", "--preset", help="SSL preset: tiny, small or a YAML file."),
    model: str | None = typer.Option(
        None, "--model", help="Tower to pretrain: a model preset, config file or sonofm model dir."
    ),
    epochs: int | None = typer.Option(None, "--epochs", help="Number of epochs."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Per-process batch size."),
    precision: str | None = typer.Option(None, "--precision", help=PRECISION_HELP),
    resume: str | None = typer.Option(None, "--resume", help="'latest', 'best' or a checkpoint file."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run in OUT."),
    overrides: list[str] | None = typer.Argument(None, help="key=value overrides (mask_ratio=0.75)."),
) -> None:
    """Self-supervised image pretraining: masked image modelling + region/organ/view classifier.

    Writes RUN/model: its image tower initialises other jobs through image.pretrained=RUN/model
    (and loads with sonofm.models.load_image_tower).

    Examples:

      sonofm ssl --data data/sim --out runs/ssl --preset tiny

      sonofm ssl --data data/sim --out runs/ssl-swin --model swin-echocare --precision bf16 mask_ratio=0.75

      sonofm ssl --data data/sim --out runs/ssl2 --model runs/clip/model weights.view=1.0

      sonofm ssl --out runs/ssl --resume latest
    """
    import os
    from pathlib import Path

    from sonofm.config import resolve_config
    from sonofm.train.ssl import SSLConfig, ssl_pretrain

    values: dict = {"data": {}, "train": {}}
    if data is not None:
        values["data"]["path"] = data
    if model is not None:
        values["model"] = model
    for key, value in (("epochs", epochs), ("batch_size", batch_size), ("precision", precision)):
        if value is not None:
            values["train"][key] = value
    saved = Path(out) / "config.yaml"
    base = str(saved) if resume is not None and saved.is_file() else preset
    extra = list(overrides or [])
    config = resolve_config(SSLConfig, preset=base, kind="ssl", values=values, overrides=extra)
    result = ssl_pretrain(config, out, resume=resume, overwrite=overwrite)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    fit = result.fit
    stop = " (early stop)" if fit.stopped_early else ""
    console.print(f"[green]ssl[/] {fit.step} steps, {fit.epoch} epochs{stop}")
    for key, value in fit.last_val.items():
        console.print(f"  {key} = {value:.3f}")
    console.print(f"  model:   {result.model_dir}\n  metrics: {result.metrics}\n  config:  {saved}")


@app.command("generate")
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
) -> None:
    """Write a report for, or answer a question about, one or more ultrasound images.

    Examples:

      sonofm generate --model runs/vlm/model --image scan.png

      sonofm generate --model runs/vlm/model --image a.png --image b.png --question "Which view?" --beams 3
    """
    from sonofm.models.vlm import generate_from_files

    out = generate_from_files(
        model, image, question, device=device, max_new_tokens=max_new_tokens, num_beams=beams,
        do_sample=sample, temperature=temperature, top_p=top_p, seed=seed, use_cache=not no_cache,
        checked=True,
    )
    typer.echo(out.text)
    if out.low_confidence:  # on stderr: the text stays pipeable, the warning is never lost
        typer.echo(f"warning: low confidence ({'; '.join(out.reasons)}); review before use", err=True)


index_app = typer.Typer(
    help=(
        "Case-retrieval index: embed a dataset's images with a model into a FAISS index "
        "(with reports, labels and thumbnails beside it) and search it by image or text.\n\n"
        "Example:\n\n"
        "  sonofm index build --model runs/clip/model --data data/sim --out idx/sim\n\n"
        "  sonofm index search --index idx/sim --image scan.png -k 5"
    ),
    no_args_is_help=True,
)
app.add_typer(index_app, name="index")


@index_app.command("build")
def index_build(
    model: str = typer.Option(..., "--model", "-m", help="Dual-encoder model dir, or an ONNX export dir."),
    data: str = typer.Option(..., "--data", help="Dataset directory or manifest file."),
    out: str = typer.Option(
        ..., "--out", help="Index directory to write (the same build replaces it atomically)."
    ),
    split: str | None = typer.Option(None, "--split", help="Index one split only (default: all rows)."),
    kind: str = typer.Option(
        "auto", "--kind", help="auto (flat below 50k vectors, else IVF), flat, ivf or hnsw."
    ),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per embedding batch."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: cuda if any)."),
    workers: int = typer.Option(0, "--workers", help="DataLoader worker processes for image decoding."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an index built from other inputs."),
) -> None:
    """Embed a dataset's images and write a FAISS case index (index.faiss, meta.parquet, thumbs/).

    Examples:

      sonofm index build --model runs/clip/model --data data/sim --out idx/sim

      sonofm index build --model export/clip-onnx --data data/sim --split train --kind hnsw --out idx/train
    """
    from rich.progress import Progress

    from sonofm.serve.index import CaseIndex, build_index

    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("embedding images", total=None)
        path = build_index(
            model,
            data,
            out,
            split=split,
            kind=kind,
            batch_size=batch_size,
            device=device,
            workers=workers,
            progress=lambda n: bar.advance(task, n),
            overwrite=overwrite,
        )
    info = CaseIndex.load(path).info
    console.print(
        f"[green]indexed[/] {info['count']} cases ({info['kind']}, dim {info['dim']}, "
        f"{info['n_skipped']} skipped) in {info['build_s']:.1f} s"
    )
    console.print(f"  index: {path}  (index.faiss, meta.parquet, thumbs/, index.json)")


@index_app.command("search")
def index_search(
    index: str = typer.Option(..., "--index", help="Index directory written by `sonofm index build`."),
    image: str | None = typer.Option(None, "--image", help="Query image (PNG/JPEG)."),
    text: str | None = typer.Option(None, "--text", help="Query text (text-to-image retrieval)."),
    k: int = typer.Option(5, "-k", "--k", help="Number of cases to return."),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Model or ONNX export dir (default: the model the index was built with)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the hits as JSON on stdout."),
) -> None:
    """Find the k most similar cases to an image or a text.

    Examples:

      sonofm index search --index idx/sim --image scan.png -k 5

      sonofm index search --index idx/sim --text "hypoechoic breast mass with shadowing" --json
    """
    import json

    from rich.table import Table

    from sonofm.serve.index import CaseIndex, load_encoder, read_query_image

    if (image is None) == (text is None):
        raise UserError("give exactly one of --image FILE or --text TEXT")
    idx = CaseIndex.load(index)
    enc, _ = load_encoder(model or idx.info["model_dir"])
    if image is not None:
        x = read_query_image(image, int(enc.config.image.image_size))
        hits = idx.search_images(enc, x, k)[0]
    else:
        hits = idx.search_text(enc, text, k)[0]
    if as_json:
        typer.echo(json.dumps([h.to_dict() for h in hits], indent=2))
        return
    table = Table(title=f"{len(hits)} similar cases")
    for col in ("rank", "score", "id", "region", "diagnosis", "report"):
        table.add_column(col, overflow="fold")
    for h in hits:
        report = h.report.replace("\n", " ")
        table.add_row(
            str(h.rank + 1),
            f"{h.score:.3f}",
            h.id,
            h.region,
            h.diagnosis or "",
            report[:120] + ("..." if len(report) > 120 else ""),
        )
    console.print(table)


export_app = typer.Typer(
    help=(
        "Export models for deployment.\n\nExample:\n\n"
        "  sonofm export onnx --model runs/clip/model --out export/clip"
    ),
    no_args_is_help=True,
)
app.add_typer(export_app, name="export")


@export_app.command("onnx")
def export_onnx_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Dual-encoder model directory."),
    out: str = typer.Option(
        ..., "--out", help="Export directory to write (the same export replaces it atomically)."
    ),
    opset: int = typer.Option(17, "--opset", help="ONNX opset version."),
    check: bool = typer.Option(
        True, "--check/--no-check", help="Compare onnxruntime with torch (max abs diff <= 1e-4)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an export of another model."),
) -> None:
    """Export the image and text encoders to ONNX, checked against torch with onnxruntime.

    Examples:

      sonofm export onnx --model runs/clip/model --out export/clip

      sonofm serve --model export/clip --onnx
    """
    from sonofm.serve.export import export_onnx

    info = export_onnx(model, out, opset=opset, check=check, overwrite=overwrite)
    worst = max(info["max_abs_diff"].values(), default=float("nan"))
    exporters = ", ".join(f"{k}: {v}" for k, v in info["exporter"].items())
    console.print(f"[green]exported[/] {model} (exporter {exporters}; max |onnx - torch| = {worst:.2e})")
    for note in info["notes"]:
        console.print(f"  note: {note}")
    console.print(f"  export: {out}  (image_encoder.onnx, text_encoder.onnx, export.json, tokenizer files)")


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
    from rich.progress import Progress

    from sonofm.data.dicom.ingest import ingest_dicom

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
    import json
    from pathlib import Path

    from sonofm.data.dicom.deid import read_key
    from sonofm.data.dicom.ingest import locate_sources

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
            overwrite=overwrite,
        )
    console.print(f"[green]evaluated[/] {len(model)} model(s) on {len(s.tasks)} tasks (suite {s.name})")
    for name in ("results.json", "results.md", *(() if no_html else ("report.html",)), "eval_log.jsonl"):
        console.print(f"  {name}: {out}/{name}")


@app.command("diagnose")
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
    import json

    from rich.table import Table

    from sonofm.atomic import atomic_write_text
    from sonofm.eval.diagnose import diagnose

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
        "  sonofm report eval tests/reports/data/corpus.jsonl\n\n"
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
    import json

    from sonofm.reports.corpus import evaluate, format_result, load_corpus

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
    import json

    from sonofm.reports.cli_support import sample_reports

    for rec in sample_reports(region, n, seed):
        typer.echo(json.dumps(rec, ensure_ascii=False))


@app.command("pretrain")
def pretrain(
    out: str = typer.Option(..., "--out", help="Run directory: model/, checkpoints/, metrics.jsonl."),
    data: str | None = typer.Option(
        None, "--data", help="Dataset dir, manifest or shard dir (optional on resume)."
    ),
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
    precision: str | None = typer.Option(None, "--precision", help=PRECISION_HELP),
    resume: str | None = typer.Option(None, "--resume", help="'latest', 'best' or a checkpoint file."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run in OUT."),
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
    result = run_pretrain(config, out, resume=resume, overwrite=overwrite)
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
