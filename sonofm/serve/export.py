"""ONNX export of a dual encoder's image and text towers, checked against torch with onnxruntime.

An export directory is self-contained (no torch model needed to serve from it):

    image_encoder.onnx   images float [0, 1] (B, C, S, S), C = the tower's in_chans
                         -> embedding (B, D) L2-normalised, features (B, D) before normalisation;
                         the tower's preprocessing (channel handling, mean/std) is inside the graph
    text_encoder.onnx    input_ids, attention_mask int64 (B, L) -> embedding (B, D), features (B, D)
    config.json, tokenizer files   copied from the model dir (everything except the weights)
    preprocess.json      image_size, in_chans, mean, std, max_length
    export.json          source model dir + hash, exporter used, opset, max |onnx - torch| per check,
                         versions of torch / onnx / onnxruntime / transformers / sonofm

Batch (and for text, sequence) axes are dynamic. The dynamo exporter (`torch.onnx.export(...,
dynamo=True)`) is tried first; when it fails (e.g. `onnxscript` is not installed) the TorchScript
exporter is used, and export.json says which one produced the files.

For the attribute-graph dual encoder the text encoder is exported *without graph features*:
`encode_text(ids, mask, attributes=None)`, i.e. the gated fusion with an empty graph
(t' = LN(t)), which is what zero-shot prompts and text queries use; the graph branch (PyG
message passing over attribute tags) stays torch-only.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sonofm import __version__
from sonofm.atomic import atomic_dir, atomic_write_json
from sonofm.errors import UserError
from sonofm.models.model_dir import CONFIG_NAME, ModelDir

log = logging.getLogger(__name__)

IMAGE_FILE = "image_encoder.onnx"
TEXT_FILE = "text_encoder.onnx"
EXPORT_INFO = "export.json"
PREPROCESS_FILE = "preprocess.json"
TOLERANCE = 1e-4
# Real report-like sentences of different lengths: the text check runs on what the tokenizer makes of them.
CHECK_TEXTS = (
    "Normal liver.",
    "A 12 mm hypoechoic solid nodule with irregular margins and posterior acoustic shadowing in the "
    "left breast at 2 o'clock, BI-RADS 4.",
    "Thyroid: isoechoic nodule, wider than tall, no microcalcifications.",
    "Apical four-chamber view. Left ventricle normal size, ejection fraction 58%.",
    "No free fluid. The kidneys are of normal size without hydronephrosis or calculi.",
)


class ExportCheckError(RuntimeError):
    """The ONNX graph's outputs differ from torch's by more than the tolerance."""


# ---------------------------------------------------------------- export


def _wrappers(model: Any) -> tuple[Any, Any]:
    import torch  # lazy: only exporting needs torch; `import sonofm.serve.export` stays torch-free
    from torch import nn  # lazy: only exporting needs torch

    class ImageEncoder(nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.m = m

        def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            f = self.m.encode_image(images, normalize=False)
            return torch.nn.functional.normalize(f, dim=-1), f

    class TextEncoder(nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.m = m

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
            f = self.m.encode_text(input_ids, attention_mask, normalize=False)
            return torch.nn.functional.normalize(f, dim=-1), f

    return ImageEncoder(model).eval(), TextEncoder(model).eval()


def _export_one(
    module: Any,
    args: tuple[Any, ...],
    path: Path,
    input_names: list[str],
    dynamic: dict[str, dict[int, str]],
    opset: int,
) -> str:
    """Export with the dynamo exporter, falling back to TorchScript; returns the exporter used."""
    import torch  # lazy: only exporting needs torch; `import sonofm.serve.export` stays torch-free

    output_names = ["embedding", "features"]
    out_axes = {"embedding": {0: "batch"}, "features": {0: "batch"}}
    try:
        if importlib.util.find_spec("onnxscript") is None:
            raise ModuleNotFoundError("the dynamo exporter needs onnxscript, which is not installed")
        from torch.export import Dim  # lazy: torch, and only the dynamo exporter uses it

        dims = {ax: Dim(name, min=1) for spec in dynamic.values() for ax, name in spec.items()}
        shapes = {n: {ax: dims[ax] for ax in dynamic[n]} for n in input_names}
        prog = torch.onnx.export(
            module,
            args,
            dynamo=True,
            opset_version=opset,
            input_names=input_names,
            output_names=output_names,
            dynamic_shapes=shapes,
            external_data=False,
            verbose=False,
        )
        prog.save(str(path))
        return "dynamo"
    except Exception as e:  # any failure of the new exporter (missing onnxscript, unsupported op) falls back
        log.info(
            "dynamo ONNX exporter failed for %s (%s: %s); using the TorchScript exporter",
            path.name,
            type(e).__name__,
            str(e).splitlines()[0] if str(e) else "",
        )
        path.unlink(missing_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # shape checks in the towers become constants in the trace; the checks below prove the
        # graph still holds for other batch sizes and sequence lengths
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*aten::index.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # "legacy TorchScript exporter"
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes={**dynamic, **out_axes},
            do_constant_folding=True,
        )
    return "torchscript"


def _session(path: Path, threads: int | None = None) -> Any:
    import onnxruntime as ort  # lazy: onnxruntime is the optional [serve] extra

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def _max_diff(sess: Any, module: Any, feeds: dict[str, np.ndarray]) -> float:
    import torch  # lazy: only the export check needs torch; the module imports without it

    with torch.no_grad():
        ref = module(*(torch.from_numpy(v) for v in feeds.values()))
    got = sess.run(None, feeds)
    return float(max(np.abs(g - r.numpy()).max() for g, r in zip(got, ref, strict=True)))


def _check_image(sess: Any, module: Any, in_chans: int, size: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    return {
        f"image_batch{b}": _max_diff(
            sess, module, {"images": rng.random((b, in_chans, size, size), np.float32)}
        )
        for b in (1, 5)
    }


def _check_text(sess: Any, module: Any, model: Any, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    out: dict[str, float] = {}
    for b in (1, 5):  # real tokenized reports: batch 1 (no padding) and 5 (padded to the longest)
        tok = model.tokenize(list(CHECK_TEXTS[:b]))
        feeds = {k: tok[k].numpy().astype(np.int64) for k in ("input_ids", "attention_mask")}
        out[f"text_real_batch{b}"] = _max_diff(sess, module, feeds)
    vocab = len(model.tokenizer)
    max_len = int(model.config.text.max_length)
    for b, length in ((1, 7), (5, max_len)):  # random ids, ragged masks, another sequence length
        ids = rng.integers(0, vocab, (b, length), dtype=np.int64)
        mask = np.ones((b, length), np.int64)
        for i in range(1, b):
            mask[i, rng.integers(2, length) :] = 0
        out[f"text_random_batch{b}_len{length}"] = _max_diff(
            sess, module, {"input_ids": ids, "attention_mask": mask}
        )
    return out


def _versions() -> dict[str, str]:
    import onnx  # lazy: onnx is the optional [serve] extra
    import onnxruntime  # lazy: onnxruntime is the optional [serve] extra
    import torch  # lazy: only exporting needs torch
    import transformers  # lazy: slow to import (~1 s); only export.json's versions read it

    return {
        "sonofm": __version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "transformers": transformers.__version__,
    }


def _same_legacy_export(out: str | Path, settings: dict[str, Any]) -> bool:
    """An export written before job records: the same export when its export.json says so."""
    try:
        info = json.loads((Path(out).expanduser() / EXPORT_INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return info.get("opset") == settings["opset"] and info.get("model_dir") == settings["model"]


def export_onnx(
    model_dir: str | Path,
    out: str | Path,
    *,
    opset: int = 17,
    check: bool = True,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export a dual encoder's image and text encoders to ONNX in `out`; returns export.json's content.

    With `check`, onnxruntime outputs are compared with torch on random images (batch 1 and 5),
    real tokenized report sentences and random token ids with ragged masks; a max abs difference
    above 1e-4 raises `ExportCheckError` and nothing is written. The directory is built in a temp
    dir beside `out` and renamed into place.
    """
    import onnx  # lazy: onnx is the optional [serve] extra
    import torch  # lazy: only exporting needs torch; `import sonofm.serve.export` stays torch-free

    from sonofm.inference.embed import model_hash  # lazy: imports torch; only exporting needs it
    from sonofm.models.io import load_model, resolve_model_dir  # lazy: imports torch
    from sonofm.outdir import open_output  # lazy: outdir imports pandas (~0.4 s); only exporting needs it

    src = resolve_model_dir(model_dir)
    # an existing export is redone only by the same export (same model, opset)
    settings = {"model": str(Path(src).resolve()), "opset": opset}
    claim = open_output(
        Path(out).expanduser(), job="export onnx", settings=settings, overwrite=overwrite,
        options="the same --model and --opset to redo it", legacy_same=_same_legacy_export(out, settings),
    )
    model = load_model(src, device="cpu").eval()
    for attr in ("encode_image", "encode_text", "tokenize"):
        if not callable(getattr(model, attr, None)):
            raise UserError(
                f"{src}: a {type(model).__name__} has no {attr}; ONNX export handles dual encoders "
                "(CLIP/SigLIP and attribute-graph models)"
            )
    cfg = model.config
    size, in_chans = int(cfg.image.image_size), int(cfg.image.in_chans)
    image_mod, text_mod = _wrappers(model)
    notes: list[str] = []
    if getattr(model, "model_type", "") == "attribute_graph_dual_encoder":
        notes.append(
            "text encoder exported without attribute-graph features (encode_text(..., attributes=None): "
            "gated fusion with an empty graph); the graph branch is torch-only"
        )

    target = Path(out).expanduser().resolve()
    t0 = time.perf_counter()
    with atomic_dir(target, mode=0o755) as tmp:
        images = torch.rand(2, in_chans, size, size, generator=torch.Generator().manual_seed(seed))
        tok = model.tokenize(list(CHECK_TEXTS[:2]))
        exporters = {
            "image": _export_one(
                image_mod, (images,), tmp / IMAGE_FILE, ["images"], {"images": {0: "batch"}}, opset
            ),
            "text": _export_one(
                text_mod,
                (tok["input_ids"], tok["attention_mask"]),
                tmp / TEXT_FILE,
                ["input_ids", "attention_mask"],
                {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}},
                opset,
            ),
        }
        for name in (IMAGE_FILE, TEXT_FILE):
            onnx.checker.check_model(str(tmp / name))
        diffs: dict[str, float] = {}
        if check:
            diffs.update(_check_image(_session(tmp / IMAGE_FILE), image_mod, in_chans, size, seed))
            diffs.update(_check_text(_session(tmp / TEXT_FILE), text_mod, model, seed))
            bad = {k: v for k, v in diffs.items() if not v <= TOLERANCE}
            if bad:
                raise ExportCheckError(
                    f"ONNX export of {src} differs from torch by more than {TOLERANCE}: "
                    + ", ".join(f"{k}={v:.3g}" for k, v in bad.items())
                )
        for f in ModelDir(src).portable_files():  # config.json + tokenizer (+ training.json): self-contained
            shutil.copy2(f, tmp / f.name)
        atomic_write_json(tmp / PREPROCESS_FILE, cfg.preprocess, default=None)
        info: dict[str, Any] = {
            "format": "sonofm-onnx-dual-encoder",
            "model_dir": str(src.resolve()),
            "model_hash": model_hash(model, src),
            "model_type": getattr(model, "model_type", None),
            "embed_dim": int(cfg.embed_dim),
            # learned temperature (log value) and bias: zero-shot probabilities need them, and the
            # export dir holds no torch weights
            "logit_scale": float(model.logit_scale.detach().reshape(-1)[0]),
            "logit_bias": (
                None if getattr(model, "logit_bias", None) is None else float(model.logit_bias.detach())
            ),
            "opset": opset,
            "exporter": exporters,
            "files": {"image": IMAGE_FILE, "text": TEXT_FILE},
            "inputs": {
                "image": {"images": ["batch", in_chans, size, size]},
                "text": {"input_ids": ["batch", "sequence"], "attention_mask": ["batch", "sequence"]},
            },
            "outputs": ["embedding", "features"],
            "checked": check,
            "tolerance": TOLERANCE,
            "max_abs_diff": diffs,
            "notes": notes,
            "versions": _versions(),
            "export_s": round(time.perf_counter() - t0, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        atomic_write_json(tmp / EXPORT_INFO, info, default=None)
        claim.write_record(tmp)
    log.info("exported %s to %s (%s)", src, target, exporters)
    return info


# ---------------------------------------------------------------- runtime


def _light_config(cfg_json: dict[str, Any]) -> Any:
    """The model's `DualEncoderConfig` from config.json (subclass-only keys such as `graph` dropped)."""
    from sonofm.models.config import DualEncoderConfig  # lazy: pydantic; only loading an export needs it

    raw = cfg_json.get("config", {})
    return DualEncoderConfig.model_validate(
        {k: v for k, v in raw.items() if k in DualEncoderConfig.model_fields}
    )


class OnnxDualEncoder:
    """`DualEncoder`'s inference API on onnxruntime (no torch model, no weights file needed).

    Inputs may be numpy arrays or torch tensors; outputs have the input's type (numpy in -> numpy
    out, torch in -> torch CPU float32 out), so it is a drop-in for `sonofm.inference.embed` and the
    server. `tokenize` returns torch tensors like `DualEncoder.tokenize` (`return_tensors="np"` for
    numpy). `encode_*(..., normalize=False)` gives the projection output before L2 normalisation.
    """

    model_type = "onnx_dual_encoder"

    def __init__(
        self,
        export_dir: Path,
        info: dict[str, Any],
        config: Any,
        tokenizer: Any,
        image_session: Any,
        text_session: Any,
    ) -> None:
        self.export_dir = export_dir
        self.info = info
        self.config = config
        self.tokenizer = tokenizer
        self.image_session = image_session
        self.text_session = text_session

    @classmethod
    def load(cls, export_dir: str | Path, *, threads: int | None = None) -> OnnxDualEncoder:
        """Open an export dir written by `export_onnx`; `threads` caps onnxruntime's intra-op threads."""
        from sonofm.models.io import read_model_config  # lazy: imports torch; only loading an export needs it
        from sonofm.models.text_towers import load_tokenizer  # lazy: transformers + torch, only on load

        d = Path(export_dir).expanduser()
        for name in (EXPORT_INFO, IMAGE_FILE, TEXT_FILE, CONFIG_NAME):
            if not (d / name).is_file():
                raise UserError(
                    f"{d} is not a sonofm ONNX export: {name} is missing (run `sonofm export onnx`)"
                )
        try:
            info = json.loads((d / EXPORT_INFO).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise UserError(f"cannot parse {d / EXPORT_INFO}: {e}") from e
        config = _light_config(read_model_config(d))
        tokenizer = load_tokenizer(str(d))
        return cls(
            d.resolve(),
            info,
            config,
            tokenizer,
            _session(d / IMAGE_FILE, threads),
            _session(d / TEXT_FILE, threads),
        )

    # drop-in no-ops for code written against nn.Module
    def eval(self) -> OnnxDualEncoder:
        return self

    def to(self, *_: Any, **__: Any) -> OnnxDualEncoder:
        return self

    @property
    def preprocess(self) -> dict[str, Any]:
        return self.config.preprocess

    @property
    def embed_dim(self) -> int:
        return int(self.config.embed_dim)

    def tokenize(self, texts: str | Sequence[str], return_tensors: str = "pt") -> dict[str, Any]:
        """texts -> {input_ids, attention_mask} (B, L) int64, L <= max_length ("pt" torch, "np" numpy)."""
        if isinstance(texts, str):
            texts = [texts]
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise ValueError(f"texts must be strings; items {bad[:5]} are {type(texts[bad[0]]).__name__}")
        enc = self.tokenizer(
            list(texts),
            padding="longest",
            truncation=True,
            max_length=int(self.config.text.max_length),
            return_tensors="np",
        )
        out = {k: np.asarray(enc[k], dtype=np.int64) for k in ("input_ids", "attention_mask")}
        if return_tensors == "np":
            return out
        import torch  # lazy: only torch-tensor callers get here (numpy callers need no torch)

        return {k: torch.from_numpy(v) for k, v in out.items()}

    @staticmethod
    def _to_numpy(x: Any, dtype: Any) -> tuple[np.ndarray, bool]:
        if hasattr(x, "detach"):
            return np.ascontiguousarray(x.detach().cpu().numpy(), dtype=dtype), True
        return np.ascontiguousarray(np.asarray(x), dtype=dtype), False

    @staticmethod
    def _back(y: np.ndarray, torch_out: bool) -> Any:
        if not torch_out:
            return y
        import torch  # lazy: only torch-tensor callers get here (numpy callers need no torch)

        return torch.from_numpy(y)

    def encode_image(self, images: Any, normalize: bool = True) -> Any:
        """images float in [0, 1], (B, 1|3, S, S) -> (B, D); 1 <-> 3 channels handled like the torch tower."""
        x, is_torch = self._to_numpy(images, np.float32)
        s, c = int(self.config.image.image_size), int(self.config.image.in_chans)
        if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[2:] != (s, s):
            raise ValueError(f"images must be (B, 1|3, {s}, {s}) floats in [0, 1], got shape {x.shape}")
        if x.shape[1] == 1 and c == 3:
            x = np.repeat(x, 3, axis=1)
        elif x.shape[1] == 3 and c == 1:
            x = x.mean(axis=1, keepdims=True, dtype=np.float32)
        emb, feat = self.image_session.run(None, {"images": x})
        return self._back(emb if normalize else feat, is_torch)

    def encode_text(self, input_ids: Any, attention_mask: Any, normalize: bool = True) -> Any:
        """(B, L) token ids + mask -> (B, D); for graph models the text path without graph features."""
        ids, is_torch = self._to_numpy(input_ids, np.int64)
        mask, _ = self._to_numpy(attention_mask, np.int64)
        emb, feat = self.text_session.run(None, {"input_ids": ids, "attention_mask": mask})
        return self._back(emb if normalize else feat, is_torch)
