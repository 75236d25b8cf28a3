"""Batched image/text embedding, cached on disk per (model hash, data hash).

An inference utility below the jobs: the eval suite, the web app and its case index, ONNX export
checks and VLM retrieval all embed through it (`sonofm.eval.embed` re-exports it).

Images are decoded (PNG -> uint8, resized by the shared pipeline `sonofm.data.transforms`, as
`UltrasoundDataset` does, no augmentation) by a decode-only dataset, batched as uint8 by the
DataLoader (optionally in worker processes, so decoding overlaps the model), converted to [0, 1]
floats once per batch and pushed through `encode_image` under `torch.inference_mode`: no
per-image model call, tensor op or metadata dict.
Texts are de-duplicated before encoding. Which text a row has depends on what the model was
trained to read (`text_field`: the report, or the contrastive caption written from it, see
`sonofm.reports.captions`); splits whose texts no task reads (a probe's training split) skip the
text tower altogether (`texts=False`). The cache is a safetensors file (tensors + JSON metadata
with the row ids): never pickle.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors import safe_open
from safetensors.numpy import save_file

from sonofm.atomic import atomic_write
from sonofm.data.dataset import load_table, manifest_root
from sonofm.data.transforms import load_gray_resized, unit_from_uint8
from sonofm.inference.precision import autocast
from sonofm.models.model_dir import ModelDir
from sonofm.reports.captions import caption_for_row

log = logging.getLogger(__name__)

CACHE_VERSION = "1"


@dataclass
class SplitEmbeddings:
    """Embeddings of one split; row i of `image`/`text` belongs to `ids[i]` (skipped images dropped)."""

    ids: list[str]
    image: np.ndarray  # (N, D) float32, L2-normalised
    text: np.ndarray  # (N, D) float32, L2-normalised embedding of each row's text; (N, 0) when not embedded
    timing: dict[str, float] = field(default_factory=dict)
    text_field: str = "report"  # which text `text` embeds (see `row_texts`)


TEXT_FIELDS = ("report", "caption")


def row_texts(rows: pd.DataFrame, text_field: str = "report") -> list[str]:
    """Each row's text as a model trained on `text_field` reads it.

    "caption": the contrastive caption of the row's structured study or parsed report (what
    `data.text=caption` trains on), the report itself where no caption can be written.
    """
    reports = rows["report"].fillna("").astype(str).tolist() if "report" in rows else [""] * len(rows)
    if text_field == "report":
        return reports
    if text_field != "caption":
        raise ValueError(f"text_field must be one of {TEXT_FIELDS}, got {text_field!r}")
    return [caption_for_row(r) or rep for r, rep in zip(rows.to_dict("records"), reports, strict=True)]


def training_text_field(model_dir: str | Path | None) -> str:
    """The text field a model directory's training run used (training.json), else "report"."""
    if model_dir is None:
        return "report"
    path = ModelDir(model_dir).training_file
    try:
        text = json.loads(path.read_text())["config"]["data"]["text"]
    except (OSError, ValueError, KeyError, TypeError):
        return "report"
    return text if text in TEXT_FIELDS else "report"


def _sha256_file(path: Path, h: Any) -> None:
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)


def model_hash(model: torch.nn.Module, model_dir: str | Path | None = None) -> str:
    """sha256 of the model directory's config.json + model.safetensors, or of the weights in memory."""
    h = hashlib.sha256()
    if model_dir is not None and ModelDir(model_dir).has_weights():
        for p in ModelDir(model_dir).identity_files():
            _sha256_file(p, h)
        return h.hexdigest()
    h.update(type(model).__name__.encode())
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "model_dump_json"):
        h.update(cfg.model_dump_json().encode())
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()


def data_hash(df: pd.DataFrame, root: str | Path, *, image_size: int, text_field: str = "report") -> str:
    """sha256 over the rows' ids, image paths, image file sizes/mtimes, texts and the input size.

    File stats (not contents) keep hashing a 100k-image dataset cheap; rewriting an image changes
    its mtime and so invalidates the cache.
    """
    h = hashlib.sha256(f"v{CACHE_VERSION}|size={image_size}|text={text_field}".encode())
    root = Path(root)
    for rid, img, txt in zip(df["id"], df["image"], df.get(text_field, [""] * len(df)), strict=True):
        p = Path(img) if Path(img).is_absolute() else root / img
        try:
            st = p.stat()
            stat = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stat = "missing"
        h.update(f"{rid}\x1f{img}\x1f{stat}\x1f{txt}\x1e".encode())
    return h.hexdigest()


def pick_device(device: str | None = None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _autocast(device: torch.device, precision: str) -> Any:
    return autocast(precision, device)


class _DecodeOnly(torch.utils.data.Dataset):
    """(index, uint8 (S, S) image) per row; None for an undecodable file (skipped and counted).

    Everything `UltrasoundDataset` does per item beyond decode + resize (RNG, text, metadata dicts,
    masks) is dead weight for embedding, and uint8 batches cross worker processes 4x cheaper.
    """

    def __init__(self, paths: list[Path], size: int) -> None:
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray] | None:
        try:
            return i, load_gray_resized(self.paths[i], self.size)  # the shared pipeline, steps 1-3
        except (OSError, ValueError, SyntaxError) as err:
            log.warning("skipping %s: cannot decode image (%s)", self.paths[i], err)
            return None


def _collate_uint8(batch: list[tuple[int, np.ndarray] | None]) -> tuple[list[int], torch.Tensor, int]:
    items = [b for b in batch if b is not None]
    if not items:
        return [], torch.zeros(0, dtype=torch.uint8), len(batch)
    idx = [i for i, _ in items]
    return idx, torch.from_numpy(np.stack([im for _, im in items]))[:, None], len(batch) - len(items)


def default_workers() -> int:
    """DataLoader workers for embedding: one per core beyond the first, at most 4 (0 on 1 core)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(4, n - 1))


def embed_images(
    model: torch.nn.Module,
    data: str | Path | pd.DataFrame,
    *,
    split: str | None = "test",
    root: str | Path | None = None,
    batch_size: int = 64,
    workers: int | None = 0,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    progress: Callable[[int], None] | None = None,
) -> tuple[list[str], np.ndarray]:
    """(ids, (N, D) float32 image embeddings) of one split; undecodable images are skipped and logged.

    workers: DataLoader worker processes decoding PNGs while the model runs (None = `default_workers`;
    small splits of <= 2 batches always decode in-process: starting workers would cost more).
    """
    dev = device if isinstance(device, torch.device) else pick_device(device)
    size = int(model.config.image.image_size)
    table = load_table(data, split)
    if root is not None:
        base = Path(root)
    elif isinstance(data, pd.DataFrame):
        base = Path(data.attrs["root"]) if "root" in data.attrs else Path(".")
    else:
        base = manifest_root(data)
    row_ids = [str(i) for i in table["id"]]
    paths = [Path(p) if Path(p).is_absolute() else base / p for p in table["image"]]
    n_workers = default_workers() if workers is None else int(workers)
    if len(paths) <= 2 * batch_size:
        n_workers = 0
    loader = torch.utils.data.DataLoader(
        _DecodeOnly(paths, size),
        batch_size=batch_size,
        shuffle=False,
        num_workers=n_workers,
        collate_fn=_collate_uint8,
        prefetch_factor=4 if n_workers else None,
        pin_memory=dev.type == "cuda",
    )
    ids: list[str] = []
    chunks: list[torch.Tensor] = []
    skipped = 0
    with torch.inference_mode(), _autocast(dev, precision):
        for idx, x8, n_bad in loader:
            skipped += n_bad
            if not idx:
                continue
            x = unit_from_uint8(x8.to(dev, non_blocking=True))  # step 4, once per batch
            chunks.append(model.encode_image(x, normalize=True).float().cpu())
            ids.extend(row_ids[i] for i in idx)
            if progress is not None:
                progress(len(idx))
    if skipped:
        log.warning("skipped %d undecodable images in split %s", skipped, split)
    d = int(model.config.embed_dim)
    emb = torch.cat(chunks).numpy() if chunks else np.zeros((0, d), np.float32)
    return ids, emb


def embed_texts(
    model: torch.nn.Module,
    texts: Sequence[str],
    *,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> np.ndarray:
    """(len(texts), D) float32 normalised text embeddings; identical texts are encoded once."""
    dev = device if isinstance(device, torch.device) else pick_device(device)
    uniq = list(dict.fromkeys(texts))
    # sort by length so batches pad little (texts of one batch share a padded length)
    order = sorted(range(len(uniq)), key=lambda i: len(uniq[i]))
    d = int(model.config.embed_dim)
    out = np.zeros((len(uniq), d), np.float32)
    with torch.inference_mode(), _autocast(dev, precision):
        for a in range(0, len(order), batch_size):
            idx = order[a : a + batch_size]
            tok = model.tokenize([uniq[i] for i in idx])
            f = model.encode_text(tok["input_ids"].to(dev), tok["attention_mask"].to(dev), normalize=True)
            out[idx] = f.float().cpu().numpy()
    pos = {t: i for i, t in enumerate(uniq)}
    return out[[pos[t] for t in texts]] if texts else out


def _cache_path(cache_dir: Path, mhash: str, dhash: str, split: str) -> Path:
    return cache_dir / f"emb-{mhash[:16]}-{dhash[:16]}-{split}.safetensors"


def _save_cache(path: Path, emb: SplitEmbeddings, meta: dict[str, str]) -> None:
    tensors = {"image": np.ascontiguousarray(emb.image), "text": np.ascontiguousarray(emb.text)}
    metadata = {**meta, "ids": json.dumps(emb.ids), "timing": json.dumps(emb.timing)}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def _load_cache(path: Path) -> SplitEmbeddings | None:
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            image, text = f.get_tensor("image"), f.get_tensor("text")
        return SplitEmbeddings(json.loads(meta["ids"]), image, text, json.loads(meta.get("timing", "{}")))
    except Exception as e:  # a corrupt or foreign cache file is recomputed, never trusted
        log.warning("ignoring unreadable embedding cache %s (%s)", path, e)
        return None


def embed_split(
    model: torch.nn.Module,
    df: pd.DataFrame,
    root: str | Path,
    split: str,
    *,
    model_id: str,
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    workers: int | None = 0,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    progress: Callable[[int], None] | None = None,
    text_field: str = "report",
    texts: bool = True,
) -> SplitEmbeddings:
    """Image and text embeddings of `df`'s rows of `split`, from the cache when it matches.

    model_id is the `model_hash`; the data part of the key is `data_hash` of the split's rows and
    the texts embedded (`text_field`; none when `texts` is False).
    """
    rows = df[df["split"] == split].reset_index(drop=True)
    size = int(model.config.image.image_size)
    row_text = row_texts(rows, text_field) if texts else [""] * len(rows)
    keyed = rows.assign(_eval_text=row_text)
    dhash = data_hash(keyed, root, image_size=size, text_field="_eval_text")
    tag = f"{split}-{text_field}" if texts else f"{split}-images"
    path = _cache_path(Path(cache_dir), model_id, dhash, tag) if cache_dir is not None else None
    if path is not None and path.is_file():
        cached = _load_cache(path)
        if cached is not None:
            cached.text_field = text_field
            log.info("embeddings of %s from cache %s", split, path)
            if progress is not None:
                progress(len(cached.ids))
            return cached
    model.eval()
    t0 = time.perf_counter()
    ids, img = embed_images(
        model,
        rows,
        split=None,
        root=root,
        batch_size=batch_size,
        workers=workers,
        device=device,
        precision=precision,
        progress=progress,
    )
    t1 = time.perf_counter()
    if texts:
        text_of = dict(zip(rows["id"], row_text, strict=True))
        txt = embed_texts(model, [text_of[i] for i in ids], device=device, precision=precision)
    else:
        txt = np.zeros((len(ids), 0), dtype=np.float32)
    t2 = time.perf_counter()
    emb = SplitEmbeddings(
        ids,
        img,
        txt,
        {"images_s": t1 - t0, "texts_s": t2 - t1, "n_images": float(len(ids))},
        text_field,
    )
    if path is not None:
        _save_cache(path, emb, {"model_hash": model_id, "data_hash": dhash, "split": split})
    return emb
