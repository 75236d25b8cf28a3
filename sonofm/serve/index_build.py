"""Building a case index directory: embeddings, FAISS, metadata rows, thumbnails, index.json.

Written atomically (built in a temp dir beside OUT, then swapped in); see :mod:`sonofm.serve.index`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from sonofm import __version__
from sonofm.atomic import atomic_dir, atomic_write_json
from sonofm.data.decode import ImageDecodeError, open_image
from sonofm.data.manifest import load_dataset
from sonofm.errors import DataError, UserError
from sonofm.outdir import open_output
from sonofm.serve.case_index import (
    FORMAT,
    FORMAT_VERSION,
    INDEX_FILE,
    INFO_FILE,
    META_FILE,
    THUMB_DIR,
    THUMB_SIZE,
    _str_or_none,
)
from sonofm.serve.export import OnnxDualEncoder
from sonofm.serve.faiss_index import KINDS, _faiss, build_faiss

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- building


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _thumb_name(case_id: str, used: set[str]) -> str:
    """A filesystem-safe, unique thumbnail file name for a case id."""
    base = _SAFE.sub("_", case_id).strip("._") or "case"
    name, n = f"{base}.jpg", 1
    while name in used:
        n += 1
        name = f"{base}-{n}.jpg"
    used.add(name)
    return name


def _write_thumb(src: Path, dst: Path) -> bool:
    try:
        with open_image(src) as im:
            im = im.convert("RGB" if im.mode in ("RGB", "RGBA", "P") else "L")
            im.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.Resampling.LANCZOS)
            im.save(dst, format="JPEG", quality=85, optimize=True)
        return True
    except (OSError, ImageDecodeError) as e:
        log.warning("no thumbnail for %s (%s)", src, e)
        return False


def is_onnx_export(path: str | Path) -> bool:
    """True for a directory written by `sonofm.serve.export.export_onnx`."""
    p = Path(path)
    return (p / "export.json").is_file() and (p / "image_encoder.onnx").is_file()


def load_encoder(model_dir: str | Path, *, device: str | None = None) -> tuple[Any, str]:
    """(model, model hash) of a sonofm model dir or an ONNX export dir (runs on onnxruntime)."""
    if is_onnx_export(model_dir):
        enc = OnnxDualEncoder.load(model_dir)
        return enc, str(enc.info.get("model_hash", ""))
    from sonofm.inference.embed import (  # lazy: keeps torch out of `import sonofm.serve.index`
        model_hash,
        pick_device,
    )
    from sonofm.models.io import load_model  # lazy: keeps torch out of `import sonofm.serve.index`

    model = load_model(model_dir).to(pick_device(device))
    if not callable(getattr(model, "encode_image", None)) or not hasattr(model.config, "embed_dim"):
        raise UserError(
            f"{model_dir}: a {type(model).__name__} has no image embedding (encode_image); "
            "an index needs a dual encoder (CLIP/SigLIP/attribute-graph) model"
        )
    return model, model_hash(model, model_dir)


def _same_legacy_index(out: Path, settings: dict[str, Any]) -> bool:
    """An index written before job records: the same build when its index.json says so."""
    try:
        info = json.loads((out / INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    data_dir = str(info.get("data_dir", ""))
    return (
        info.get("model_dir") == settings["model"]
        and info.get("split") == settings["split"]
        and settings["data"] in (data_dir, str(Path(data_dir).parent))
    )


def build_index(
    model_dir: str | Path,
    data_dir: str | Path,
    out: str | Path,
    *,
    split: str | None = None,
    kind: str = "auto",
    batch_size: int = 64,
    device: str | None = None,
    workers: int = 0,
    thumbnails: bool = True,
    progress: Callable[[int], None] | None = None,
    overwrite: bool = False,
) -> Path:
    """Embed the images of `data_dir` (one split, or all rows) with a model and write an index dir.

    `model_dir` is a sonofm dual-encoder model dir or an ONNX export dir (then onnxruntime embeds).
    The directory is built in a temp dir beside `out` and renamed into place, so an interrupted
    build never leaves a partial index (a previous index at `out` stays until the new one is whole).
    `progress(n)` is called with the number of images embedded per batch. `thumbnails=False`
    skips writing thumbs/ (the meta `thumb` paths then point at nothing). Returns `out`.
    """
    from sonofm.inference.embed import embed_images  # lazy: keeps torch out of `import sonofm.serve.index`

    if kind not in KINDS:
        raise UserError(f"index kind {kind!r} is not one of {', '.join(KINDS)}")
    # an existing index is rebuilt only by the same build (same model, data, split, kind)
    settings = {
        "model": str(Path(model_dir).expanduser().resolve()),
        "data": str(Path(data_dir).expanduser().resolve()),
        "split": split,
        "kind": kind,
    }
    claim = open_output(
        Path(out).expanduser(),
        job="index build",
        settings=settings,
        overwrite=overwrite,
        options="the same --model, --data, --split and --kind to rebuild it",
        legacy_same=_same_legacy_index(Path(out).expanduser(), settings),
    )
    t_start = time.perf_counter()
    ds = load_dataset(data_dir)
    df = ds.manifest
    if split is not None:
        df = ds.split(split)
        if df.empty:
            have = sorted(set(ds.manifest["split"].dropna()))
            raise DataError(f"{data_dir}: no rows in split {split!r} (splits present: {have})")
    df = df.reset_index(drop=True)
    if df.empty:
        raise DataError(f"{data_dir}: the manifest has no rows")
    model, mhash = load_encoder(model_dir, device=device)
    t0 = time.perf_counter()
    ids, emb = embed_images(
        model,
        df,
        split=None,
        root=ds.root,
        batch_size=batch_size,
        workers=workers,
        device=device,
        progress=progress,
    )
    embed_s = time.perf_counter() - t0
    if not ids:
        raise DataError(f"{data_dir}: no image could be decoded, nothing to index")
    if emb.shape[1] != int(model.config.embed_dim):
        raise UserError(f"model {model_dir} gave dim {emb.shape[1]}, config says {model.config.embed_dim}")
    index, params = build_faiss(emb, kind)

    target = Path(out).expanduser().resolve()
    with atomic_dir(target, mode=0o755) as tmp:
        rows = df.set_index(df["id"].astype(str)).loc[ids].reset_index(drop=True)
        (tmp / THUMB_DIR).mkdir()
        used: set[str] = set()
        thumbs: list[str] = []
        n_thumb_fail = 0
        for rid, img in zip(rows["id"], rows["image"], strict=True):
            name = f"{THUMB_DIR}/{_thumb_name(str(rid), used)}"
            thumbs.append(name)
            if thumbnails and not _write_thumb(ds.path(img), tmp / name):
                n_thumb_fail += 1
        meta = pd.DataFrame(
            {
                "id": rows["id"].astype(str),
                "image": [os.path.relpath(ds.path(p), target) for p in rows["image"]],
                "thumb": thumbs,
                **{
                    c: [_str_or_none(v) for v in rows[c]] if c in rows.columns else [None] * len(rows)
                    for c in ("report", "region", "organ", "diagnosis", "view", "patient_id")
                },
            }
        )
        meta.to_parquet(tmp / META_FILE, index=False)
        _faiss().write_index(index, str(tmp / INDEX_FILE))
        info = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "sonofm_version": __version__,
            "faiss_version": _faiss().__version__,
            "model_dir": str(Path(model_dir).expanduser().resolve()),
            "model_hash": mhash,
            "model_type": getattr(model, "model_type", None),
            "runtime": "onnxruntime" if is_onnx_export(model_dir) else "torch",
            "data_dir": str(ds.root.resolve()),
            "data_card": ds.card,
            "split": split,
            "kind": params["kind"],
            "dim": int(emb.shape[1]),
            "count": len(ids),
            "n_skipped": len(df) - len(ids),
            "n_thumb_failed": n_thumb_fail,
            "metric": "ip",
            "normalized": True,
            **{k: v for k, v in params.items() if k != "kind"},
            "embed_s": round(embed_s, 3),
            "build_s": round(time.perf_counter() - t_start, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        atomic_write_json(tmp / INFO_FILE, info)
        claim.write_record(tmp)
    log.info("index of %d cases (%s, dim %d) written to %s", len(ids), params["kind"], emb.shape[1], target)
    return target
