"""Serving verbs: serve the web app and API, build and search a case index, export to ONNX."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from sonofm.cli.common import console, verb_group
from sonofm.errors import UserError


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
    import uvicorn  # lazy: optional dependency (sonofm[serve])

    from sonofm.serve.app import configure_json_logging, create_app  # lazy: keeps torch out of --help
    from sonofm.serve.settings import ServeSettings  # lazy: pydantic would slow `sonofm --help`

    try:
        settings = ServeSettings(
            model=model,
            vlm=vlm,
            seg=seg,
            index=index,
            onnx=onnx,
            token=token,
            max_upload_mb=max_upload_mb,
            cors_origins=list(cors),
            batch_max=batch_max,
            batch_wait_ms=batch_wait_ms,
            store_uploads=store_uploads,
            device=device,
            threads=threads,
        )
    except ValueError as e:  # pydantic ValidationError: one line per bad option
        raise UserError(f"invalid serve options: {e}") from e
    configure_json_logging()
    console.print(f"[cyan]serve[/] loading {model} ...")
    api = create_app(settings)
    console.print(f"[cyan]serve[/] http://{host}:{port}/  (API docs: /docs; stop with Ctrl+C)")
    uvicorn.run(api, host=host, port=port, log_config=None, access_log=False)


index_app = verb_group(
    "Case-retrieval index: embed a dataset's images with a model into a FAISS index "
    "(with reports, labels and thumbnails beside it) and search it by image or text.",
    "sonofm index build --model runs/clip/model --data data/sim --out idx/sim",
    "sonofm index search --index idx/sim --image scan.png -k 5",
)


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
    from rich.progress import Progress  # lazy: keeps `sonofm --help` fast

    from sonofm.serve.index import CaseIndex, build_index  # lazy: pandas would slow `sonofm --help`

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
    from sonofm.serve.index import CaseIndex, load_encoder, read_query_image  # lazy: pandas slows --help

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


export_app = verb_group(
    "Export models for deployment.", "sonofm export onnx --model runs/clip/model --out export/clip"
)


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
    from sonofm.serve.export import export_onnx  # lazy: numpy would slow `sonofm --help`

    info = export_onnx(model, out, opset=opset, check=check, overwrite=overwrite)
    worst = max(info["max_abs_diff"].values(), default=float("nan"))
    exporters = ", ".join(f"{k}: {v}" for k, v in info["exporter"].items())
    console.print(f"[green]exported[/] {model} (exporter {exporters}; max |onnx - torch| = {worst:.2e})")
    for note in info["notes"]:
        console.print(f"  note: {note}")
    console.print(f"  export: {out}  (image_encoder.onnx, text_encoder.onnx, export.json, tokenizer files)")
