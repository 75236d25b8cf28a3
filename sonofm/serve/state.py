"""What `sonofm serve` loads once per process: encoder, optional index/VLM/segmentation model, batcher."""

from __future__ import annotations

import logging
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sonofm import load_model
from sonofm.errors import UserError
from sonofm.inference.embed import pick_device
from sonofm.serve.analyze import Analyzer, new_deidentifier
from sonofm.serve.batching import MicroBatcher
from sonofm.serve.export import export_onnx
from sonofm.serve.index import CaseIndex, is_onnx_export, load_encoder
from sonofm.serve.settings import ServeSettings

log = logging.getLogger("sonofm.serve.app")  # the service's log lines keep one logger name


@dataclass
class ServeState:
    """Everything loaded once per process."""

    settings: ServeSettings
    analyzer: Analyzer
    batcher: MicroBatcher
    vlm_executor: ThreadPoolExecutor
    deid: Any
    model_info: dict[str, Any] = field(default_factory=dict)
    load_s: float = 0.0
    thumbs: dict[str, Path] = field(default_factory=dict)

    def close(self) -> None:
        self.batcher.close()
        self.vlm_executor.shutdown(wait=False, cancel_futures=True)


def _load_encoder(settings: ServeSettings) -> tuple[Any, str, dict[str, Any]]:
    """(encoder, backend, info): torch model dir, ONNX export dir, or a model dir exported on the fly."""
    src = settings.model
    if settings.onnx and not is_onnx_export(src):
        # export to a temp dir and load from it: onnxruntime sessions and the tokenizer are in
        # memory afterwards, so nothing is left on disk (`sonofm export onnx` keeps an export)
        with tempfile.TemporaryDirectory(prefix="sonofm-onnx-") as tmp:
            log.info("exporting %s to ONNX for onnxruntime serving", src)
            export_onnx(src, Path(tmp) / "export")
            encoder, mhash = load_encoder(Path(tmp) / "export", device=settings.device)
        backend = "onnxruntime"
    else:
        encoder, mhash = load_encoder(src, device=settings.device)
        backend = "onnxruntime" if is_onnx_export(src) else "torch"
    if not callable(getattr(encoder, "encode_text", None)):
        raise UserError(
            f"{settings.model}: {type(encoder).__name__} has no text encoder; serving needs a dual encoder"
        )
    info = {
        "model_type": getattr(encoder, "model_type", None),
        "name": getattr(encoder.config, "name", None),
        "hash": mhash,
        "embed_dim": int(encoder.config.embed_dim),
        "image_size": int(encoder.config.image.image_size),
        "backend": backend,
    }
    return encoder, backend, info


def load_optional(path: str | None, what: str, needs: tuple[str, ...], device: Any) -> Any:
    if path is None:
        return None
    model = load_model(path)
    if device is not None and hasattr(model, "to"):
        model = model.to(device)
    missing = [a for a in needs if getattr(model, a, None) is None]
    if missing:
        raise UserError(
            f"{path}: a {type(model).__name__} is not a {what} model (it has no {', '.join(missing)})"
        )
    return model


def load_state(settings: ServeSettings) -> ServeState:
    """Load encoder (+ index, VLM, segmentation model), cache the text bank, build the batcher."""
    t0 = time.perf_counter()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)  # one process per host: the whole process's pool
    encoder, backend, info = _load_encoder(settings)
    device = pick_device(settings.device) if backend == "torch" else torch.device("cpu")
    index, thumbs = None, {}
    if settings.index is not None:
        index = CaseIndex.load(settings.index)
        index.check_model(encoder)
        if index.info.get("model_hash") and index.info.get("model_hash") != info["hash"]:
            log.warning(
                "index %s was built with model %s (hash %.12s), serving %s (hash %.12s): similar cases "
                "are ranked in a space the served model may not share",
                settings.index,
                index.info.get("model_dir"),
                index.info.get("model_hash"),
                settings.model,
                info["hash"],
            )
        thumbs = {
            str(i): index.path / str(t) for i, t in zip(index.meta["id"], index.meta["thumb"], strict=True)
        }
    vlm = load_optional(settings.vlm, "generative VLM", ("chat",), device)
    seg = load_optional(settings.seg, "segmentation", ("visual",), device)
    seg_cfg = getattr(seg, "config", None)
    if seg is not None and getattr(seg_cfg, "task", "segment") != "segment":
        raise UserError(f"--seg {settings.seg}: a {seg_cfg.task!r} task model; expected a 'segment' one")
    if seg is not None and int(getattr(seg, "input_frames", 1)) != 1:
        raise UserError(f"--seg {settings.seg}: takes {seg.input_frames} frames; serving needs 1-image input")
    analyzer = Analyzer(
        encoder,
        index=index,
        vlm=vlm,
        seg=seg,
        device=device,
        backend=backend,
        thumbnails_inline=settings.thumbnails_inline,
    )
    batcher = MicroBatcher(
        analyzer.forward, max_batch=settings.batch_max, max_wait_ms=settings.batch_wait_ms, name="encoder"
    )
    log.info(
        "loaded model %s (%s), index %s, vlm %s, seg %s",
        settings.model, backend, settings.index, settings.vlm, settings.seg,
    )  # fmt: skip
    # what /ready shows (it is open even with a token): no filesystem paths
    info["index"] = None if index is None else {"count": len(index), "kind": index.kind}
    info["vlm"] = vlm is not None
    info["segmentation"] = seg is not None
    return ServeState(
        settings=settings,
        analyzer=analyzer,
        batcher=batcher,
        vlm_executor=ThreadPoolExecutor(max_workers=1, thread_name_prefix="sonofm-vlm"),
        deid=new_deidentifier(),
        model_info=info,
        load_s=time.perf_counter() - t0,
        thumbs=thumbs,
    )
