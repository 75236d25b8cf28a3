"""One uploaded image -> findings, attributes, region/organ, similar cases, report, overlay.

Split in the three stages the server runs them in:

1. `decode_upload` (a request thread): sniff the bytes (PNG, JPEG or DICOM; anything else is a
   415), decode to 8-bit grayscale. DICOM goes through `sonofm.data.dicom`: decoded with
   `read_dicom`, the header de-identified in memory with a per-process random key, everything
   outside the scan region and burned-in text inside it blanked (`burnin_mask`), cropped to the
   scan area, exactly as `sonofm ingest dicom` does before anything is written.
2. `Analyzer.forward` (the batcher's worker thread, once per micro-batch): image embeddings, all
   zero-shot scores as ONE matmul against text embeddings cached at start-up, index search for
   the whole batch, and the segmentation forward when a segmentation model is loaded.
3. `Analyzer.finish` (per request): probabilities, labels, thumbnails, overlay PNG.

Zero-shot scoring reuses the eval suite's definitions (`sonofm.eval.tasks.zeroshot.class_prompts`,
`sonofm.reports.prompts.all_prompt_pairs` / `attribute_prompts`, `EvalContext.class_weights`'s
mean-of-normalised-prompts rule), so the server's probabilities are the ones the suite measures.
"""

from __future__ import annotations

import base64
import io
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sonofm import taxonomy as tx
from sonofm.data.decode import MAX_PIXELS as DECODE_MAX_PIXELS
from sonofm.errors import UserError

log = logging.getLogger(__name__)

MAX_PIXELS = DECODE_MAX_PIXELS  # one pixel limit for the toolkit (decompression-bomb guard)
PREVIEW_SIZE = 384  # longest side of the preview/overlay PNGs in responses
ATTRIBUTE_DIMS = ("diagnosis", "shape", "margin", "echogenicity", "internal", "posterior", "vascularity")

# label colours of the segmentation overlay (MASK_LABELS ids; 0 = background is transparent)
OVERLAY_COLOURS = {
    1: (255, 64, 64),
    2: (64, 160, 255),
    3: (255, 200, 0),
    4: (0, 200, 120),
    5: (200, 80, 255),
    6: (255, 128, 0),
    7: (0, 220, 220),
    8: (255, 0, 160),
    9: (120, 255, 60),
    10: (255, 255, 255),
}


class UploadError(Exception):
    """A request-level problem with the upload; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ---------------------------------------------------------------- stage 1: decode
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
)
_OTHER_MAGIC = (  # recognised only to name them in the 415 message
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"%PDF", "PDF"),
    (b"PK\x03\x04", "ZIP"),
    (b"\x1a\x45\xdf\xa3", "WebM/Matroska video"),
)


@dataclass
class DecodedUpload:
    """An upload turned into what the model sees, plus non-identifying facts about it."""

    kind: str  # "png" | "jpeg" | "dicom"
    image: np.ndarray  # uint8 (H, W) grayscale; for DICOM de-identified (UI and burned-in text blanked)
    filename: str
    info: dict[str, Any] = field(default_factory=dict)
    dicom: Any = None  # the de-identified pydicom Dataset (header only is trustworthy) for store_uploads


def sniff_kind(data: bytes, filename: str = "", content_type: str = "") -> str:
    """'png' | 'jpeg' | 'dicom' from the bytes; UploadError 415 for anything else."""
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    ct = (content_type or "").split(";")[0].strip().lower()
    if filename.lower().endswith((".dcm", ".dicom")) or ct == "application/dicom":
        return "dicom"  # DICOM without the 128-byte preamble (allowed by PS3.10 readers with force)
    other = next((name for magic, name in _OTHER_MAGIC if data.startswith(magic)), None)
    what = f"a {other} file" if other else f"bytes starting {data[:8]!r}"
    raise UploadError(
        415,
        f"unsupported file {filename or '(unnamed)'!r} (content-type {ct or 'none'!r}, {what}): "
        "expected a PNG, JPEG or DICOM image",
    )


def _decode_raster(data: bytes, kind: str, filename: str) -> np.ndarray:
    """PNG/JPEG bytes -> uint8 (H, W) through the shared decoder (one pixel limit, one failure)."""
    from sonofm.data.decode import ImageDecodeError
    from sonofm.data.transforms import read_gray

    try:
        return read_gray(data, name=repr(filename), max_pixels=MAX_PIXELS)
    except ImageDecodeError as e:
        raise UploadError(422, f"corrupt {kind.upper()} image: {e}") from None


def _decode_dicom(data: bytes, filename: str, deid: Any) -> DecodedUpload:
    import pydicom
    from pydicom.errors import InvalidDicomError

    from sonofm.data.dicom.burnin import apply_mask, burnin_mask
    from sonofm.data.dicom.read import CHROMA_THRESHOLD, chroma, read_dicom
    from sonofm.errors import DataError

    has_preamble = len(data) >= 132 and data[128:132] == b"DICM"
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=not has_preamble)
    except InvalidDicomError as e:
        raise UploadError(422, f"{filename!r}: not a valid DICOM file ({e})") from None
    except Exception as e:  # truncated headers raise EOFError / ValueError / struct.error
        raise UploadError(422, f"{filename!r}: corrupt DICOM header ({type(e).__name__}: {e})") from None
    if "PixelData" not in ds:
        sop = str(ds.get("SOPClassUID", "") or "unknown SOP class")
        raise UploadError(
            422, f"{filename!r}: DICOM file has no Pixel Data ({sop}); expected an ultrasound image"
        )
    try:
        img = read_dicom(ds)
    except DataError as e:
        raise UploadError(422, f"{filename!r}: corrupt DICOM pixel data ({e})") from None
    except Exception as e:  # pragma: no cover - read_dicom wraps decoder errors in DataError
        raise UploadError(422, f"{filename!r}: cannot decode DICOM ({type(e).__name__}: {e})") from None
    value0 = img.rgb[0].max(axis=-1) if img.rgb is not None else img.frames[0]
    ignore = chroma(img.rgb[0]) > CHROMA_THRESHOLD if (img.doppler and img.rgb is not None) else None
    mask = burnin_mask(value0, img.scan_mask, ignore=ignore)
    frame = apply_mask(img.frames[0], mask)
    x0, y0, x1, y1 = img.scan_box or (0, 0, frame.shape[1], frame.shape[0])
    frame = np.ascontiguousarray(frame[y0:y1, x0:x1])
    modality = str(ds.get("Modality", "") or "")
    deid.deidentify(ds, source="upload")  # in memory only; nothing identifying is kept or logged
    info = {
        "frames": int(img.frames.shape[0]),
        "frame_used": 0,
        "modality": modality or None,
        "doppler": bool(img.doppler),
        "pixel_spacing_mm": img.pixel_spacing_mm,
        "masked_fraction": round(float(mask.mean()), 4),
        "scan_box": [int(x0), int(y0), int(x1), int(y1)],
        "deidentified": True,
    }
    return DecodedUpload("dicom", frame, filename, info, dicom=ds)


def decode_upload(data: bytes, filename: str, content_type: str, *, deid: Any) -> DecodedUpload:
    """Bytes of an upload -> `DecodedUpload`; UploadError (400/415/422) naming the problem."""
    if not data:
        raise UploadError(400, f"uploaded file {filename or '(unnamed)'!r} is empty (0 bytes)")
    kind = sniff_kind(data, filename, content_type)
    if kind == "dicom":
        out = _decode_dicom(data, filename, deid)
    else:
        out = DecodedUpload(kind, _decode_raster(data, kind, filename), filename)
    out.info.update(kind=kind, height=int(out.image.shape[0]), width=int(out.image.shape[1]), bytes=len(data))
    return out


def new_deidentifier() -> Any:
    """A de-identifier with a random per-process key: pseudonyms cannot be linked across restarts."""
    from sonofm.data.dicom.deid import Deidentifier

    return Deidentifier(secrets.token_bytes(32))


def to_model_input(image: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (H, W) -> float (1, S, S) in [0, 1] by the shared pipeline (`sonofm.data.transforms`)."""
    from sonofm.data.transforms import model_input

    return model_input(image, size)


def _fit(image: np.ndarray, longest: int = PREVIEW_SIZE) -> np.ndarray:
    from PIL import Image

    h, w = image.shape[:2]
    s = min(1.0, longest / max(h, w))
    if s >= 1.0:
        return image
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def png_data_uri(image: np.ndarray) -> str:
    from sonofm.data.pngio import encode_png

    return "data:image/png;base64," + base64.b64encode(encode_png(image)).decode("ascii")


# ---------------------------------------------------------------- zero-shot heads
@dataclass
class Head:
    """A zero-shot classifier: one softmax over `names` (rows [start, stop) of the weight matrix)."""

    name: str
    names: list[str]
    labels: list[str]
    start: int
    stop: int


def _tag_label(dim: str, tag: str) -> str:
    if dim == "echo":
        return tx.ECHO_FINDINGS[tag].phrase
    return tx.get_tag(dim, tag).phrase


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def _onnx_log_scale(model: Any) -> float | None:
    """The learned log logit scale an ONNX export recorded in export.json (None if absent)."""
    value = (getattr(model, "info", None) or {}).get("logit_scale")
    return float(value) if isinstance(value, int | float) else None


def model_logit_scale(model: Any) -> float:
    """exp(logit_scale) clamped at config.max_logit_scale (as `EvalContext.logit_scale`).

    torch models carry the learned log scale as a parameter; an ONNX export records it in
    export.json; otherwise the configured init is used (and a warning logged).
    """
    cfg = getattr(model, "config", None)
    cap = float(getattr(cfg, "max_logit_scale", 100.0))
    ls = getattr(model, "logit_scale", None)
    if ls is not None:
        v = float(_to_numpy(ls).reshape(-1)[0])
    else:
        v = _onnx_log_scale(model)
        if v is None:
            v = float(getattr(cfg, "logit_scale_init", np.log(1 / 0.07)))
            log.warning("model has no learned logit scale available; using the configured init %.3f", v)
    return float(min(np.exp(v), cap))


def encode_prompts(model: Any, texts: list[str], *, device: Any = None, batch_size: int = 256) -> np.ndarray:
    """(N, D) normalised embeddings of `texts` via `sonofm.eval.embed.embed_texts` (dedup + length sort)."""
    from sonofm.eval.embed import embed_texts

    return embed_texts(model, texts, batch_size=batch_size, device=device or torch.device("cpu"))


def _class_weights(emb_of: dict[str, np.ndarray], prompts: list[list[str]]) -> np.ndarray:
    """(C, D): mean of each class's normalised prompt embeddings, renormalised (EvalContext rule)."""
    w = np.stack([np.mean([emb_of[t] for t in p], axis=0) for p in prompts])
    return (w / np.linalg.norm(w, axis=1, keepdims=True).clip(1e-12)).astype(np.float32)


# Descriptor tags named after one organ's anatomy (TI-RADS terms for the thyroid) are offered
# only for that region; echo findings only for the heart, and lesion descriptors never for it.
ORGAN_SPECIFIC_TAGS: dict[tuple[str, str], frozenset[str]] = {
    ("margin", "extrathyroidal_extension"): frozenset({"thyroid"}),
    ("echogenicity", "very_hypoechoic"): frozenset({"thyroid"}),
    ("internal", "spongiform"): frozenset({"thyroid"}),
    ("internal", "comet_tail"): frozenset({"thyroid"}),
}


def in_region_vocabulary(region: str, dimension: str, tag: str) -> bool:
    """Whether finding (dimension, tag) can be reported for an image of `region`.

    Why: scoring every finding for every image listed "reduced left ventricular ejection
    fraction" and "extrathyroidal extension" for a breast image.
    """
    if dimension == "echo":
        return region == "heart"
    if region == "heart":
        return False
    allowed = ORGAN_SPECIFIC_TAGS.get((dimension, tag))
    return allowed is None or region in allowed


@dataclass
class TextBank:
    """All zero-shot weights, cached once at start-up: class heads + finding pairs."""

    heads: list[Head]
    class_w: np.ndarray  # (sum of classes, D)
    findings: list[tuple[str, str, str]]  # (dimension, tag, label) per finding
    pair_w: np.ndarray  # (2F, D): rows 2f (positive) and 2f+1 (negated) of finding f
    logit_scale: float
    n_prompts: int

    @classmethod
    def build(cls, model: Any, *, device: Any = None) -> TextBank:
        from sonofm.eval.tasks.zeroshot import class_prompts
        from sonofm.reports import prompts as P

        specs: list[tuple[str, list[str], list[str], list[list[str]]]] = []
        regions = list(tx.REGIONS)
        specs.append(
            (
                "region",
                regions,
                [r.replace("_", " ") for r in regions],
                [class_prompts("region", r) for r in regions],
            )
        )
        organs = [o.id for o in tx.ORGANS]
        specs.append(
            (
                "organ",
                organs,
                [tx.get_organ(o).phrase for o in organs],
                [class_prompts("organ", o) for o in organs],
            )
        )
        for dim in ATTRIBUTE_DIMS:
            tags = [t.id for t in tx.tags(dim)]
            specs.append(
                (dim, tags, [_tag_label(dim, t) for t in tags], [P.attribute_prompts(dim, t) for t in tags])
            )
        pairs = P.all_prompt_pairs(include_tags=True)
        texts = [t for s in specs for p in s[3] for t in p]
        texts += [t for pr in pairs.values() for t in (*pr.positive, *pr.negative)]
        uniq = list(dict.fromkeys(texts))
        emb = encode_prompts(model, uniq, device=device)
        emb_of = dict(zip(uniq, emb, strict=True))
        heads, mats, row = [], [], 0
        for name, ids, labels, prompts in specs:
            heads.append(Head(name, ids, labels, row, row + len(ids)))
            mats.append(_class_weights(emb_of, prompts))
            row += len(ids)
        findings, pw = [], []
        for (dim, tag), pr in pairs.items():
            findings.append((dim, tag, _tag_label(dim, tag)))
            pw.append(_class_weights(emb_of, [list(pr.positive), list(pr.negative)]))
        return cls(
            heads=heads,
            class_w=np.concatenate(mats),
            findings=findings,
            pair_w=np.concatenate(pw),
            logit_scale=model_logit_scale(model),
            n_prompts=len(uniq),
        )


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


# ---------------------------------------------------------------- segmentation
def _seg_logits(out: Any) -> torch.Tensor:
    """The (B, C, H, W) logits of a segmentation model's output (tensor or dict of them)."""
    if isinstance(out, dict):
        for key in ("logits", "mask", "masks", "seg"):
            if isinstance(out.get(key), torch.Tensor):
                return out[key]
        out = next((v for v in out.values() if isinstance(v, torch.Tensor) and v.ndim == 4), None)
    if not isinstance(out, torch.Tensor) or out.ndim != 4:
        raise UserError("the segmentation model must return (B, C, H, W) logits (or a dict holding them)")
    return out


def seg_label_ids(seg: Any, n_channels: int) -> list[int]:
    """MASK_LABELS id of each output channel: [0, *labels] from the segment task's `labels` option
    (a `TaskModel` records it in `config.task_options`), else the channel index itself."""
    task = getattr(seg, "task", None)
    labels = getattr(task, "labels", None)
    if labels is None:
        opts = getattr(getattr(seg, "config", None), "task_options", None)
        labels = opts.get("labels") if isinstance(opts, dict) else None
    if isinstance(labels, list | tuple) and len(labels) + 1 == n_channels:
        return [0, *[int(v) for v in labels]]
    if n_channels == 1:
        return [0, 1]  # one sigmoid channel: lesion
    return list(range(n_channels))


def seg_label_names(seg: Any, ids: list[int]) -> list[str]:
    """Names of the label ids: the model's own `label_names` when it has them, else MASK_LABELS."""
    from sonofm.taxonomy import MASK_LABELS

    names = getattr(seg, "label_names", None)
    if isinstance(names, list | tuple) and len(names) == len(ids):
        return [str(n) for n in names]
    return [MASK_LABELS.get(i, f"class {i}") for i in ids]


def seg_labels_from_logits(logits: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) logits -> uint8 (B, H, W) label maps (one channel: sigmoid > 0.5)."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).to(torch.uint8).cpu().numpy()
    return logits.argmax(1).to(torch.uint8).cpu().numpy()


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB uint8: `labels` (any size) blended in colour over grayscale `image` at preview size."""
    from PIL import Image

    base = _fit(image)
    h, w = base.shape
    lab = np.asarray(Image.fromarray(labels).resize((w, h), Image.Resampling.NEAREST))
    rgb = np.repeat(base[..., None], 3, axis=2).astype(np.float32)
    for lid in np.unique(lab):
        if lid == 0:
            continue
        col = np.array(OVERLAY_COLOURS.get(int(lid), (255, 255, 0)), np.float32)
        m = lab == lid
        rgb[m] = (1 - alpha) * rgb[m] + alpha * col
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- stages 2 + 3
@dataclass
class Job:
    """One request's input to the batched forward."""

    image: torch.Tensor  # (1, S, S) float in [0, 1] at the encoder's size
    k: int
    seg_image: torch.Tensor | None = None  # (1, S', S') at the segmentation model's size


@dataclass
class ForwardOut:
    """One request's share of a batched forward."""

    embedding: np.ndarray  # (D,)
    class_logits: np.ndarray  # (sum of classes,)
    pair_logits: np.ndarray  # (2F,)
    hits: list[Any] | None
    seg_labels: np.ndarray | None
    batch_size: int
    forward_ms: float


class Analyzer:
    """Holds the loaded models and the cached text bank; `forward` runs one micro-batch."""

    def __init__(
        self,
        encoder: Any,
        *,
        index: Any = None,
        vlm: Any = None,
        seg: Any = None,
        device: Any = None,
        backend: str = "torch",
        thumbnails_inline: bool = True,
        bank: TextBank | None = None,
    ) -> None:
        self.encoder = encoder
        self.index = index
        self.vlm = vlm
        self.seg = seg
        self.backend = backend
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.image_size = int(encoder.config.image.image_size)
        self.seg_size = int(seg.visual.image_size) if seg is not None else None
        self.seg_ids: list[int] | None = None  # MASK_LABELS id per output channel, set on first forward
        self.thumbnails_inline = thumbnails_inline
        # the prompt embeddings are computed once here (a few thousand prompts), never per request
        self.bank = bank if bank is not None else TextBank.build(encoder, device=self.device)
        self._thumb_cache: dict[str, str] = {}
        log.info("text bank: %d prompts, %d findings cached", self.bank.n_prompts, len(self.bank.findings))

    # ----- stage 2: the batched forward (worker thread) -----
    def forward(self, jobs: list[Job]) -> list[ForwardOut]:
        import time

        t0 = time.perf_counter()
        x = torch.stack([j.image for j in jobs]).to(self.device)
        with torch.inference_mode():
            emb = _to_numpy(self.encoder.encode_image(x, normalize=True))
            seg_maps = None
            if self.seg is not None:
                xs = torch.stack([j.seg_image for j in jobs]).to(self.device)
                logits = _seg_logits(self.seg(xs))
                if self.seg_ids is None:
                    self.seg_ids = seg_label_ids(self.seg, int(logits.shape[1]))
                seg_maps = seg_labels_from_logits(logits)
        cls_logits = self.bank.logit_scale * emb @ self.bank.class_w.T  # (B, C) one matmul for all heads
        pair_logits = self.bank.logit_scale * emb @ self.bank.pair_w.T  # (B, 2F)
        hits = self.index.search(emb, max(j.k for j in jobs)) if self.index is not None else None
        ms = (time.perf_counter() - t0) * 1000.0
        return [
            ForwardOut(
                embedding=emb[i],
                class_logits=cls_logits[i],
                pair_logits=pair_logits[i],
                hits=None if hits is None else hits[i][: j.k],
                seg_labels=None if seg_maps is None else seg_maps[i],
                batch_size=len(jobs),
                forward_ms=ms,
            )
            for i, j in enumerate(jobs)
        ]

    def make_job(self, image: np.ndarray, k: int) -> Job:
        seg_image = to_model_input(image, self.seg_size) if self.seg_size else None
        return Job(to_model_input(image, self.image_size), k, seg_image)

    # ----- stage 3: the response (request side) -----
    def predictions(self, out: ForwardOut, region: str | None = None) -> dict[str, Any]:
        """region/organ/diagnosis tops, per-dimension attribute softmaxes, and the findings of one
        region's vocabulary sorted by p: the given `region`, else the predicted one.

        `findings_region` says which region the findings are for and that region's own probability,
        so a reader sees how sure the model is of the context the findings assume.
        """
        if region is not None and region not in tx.REGIONS:
            raise UserError(f"unknown region {region!r}; expected one of {', '.join(tx.REGIONS)}")
        res: dict[str, Any] = {"attributes": {}}
        for h in self.bank.heads:
            p = _softmax(out.class_logits[h.start : h.stop])
            order = np.argsort(-p)
            scores = [
                {"tag": h.names[i], "label": h.labels[i], "probability": round(float(p[i]), 5)} for i in order
            ]
            if h.name in ("region", "organ"):
                res[h.name] = {**scores[0], "scores": scores}
            else:
                res["attributes"][h.name] = scores
        pl = out.pair_logits.reshape(-1, 2)
        p_pos = _softmax(pl)[:, 0]
        scope = region or res["region"]["tag"]
        p_scope = next(s["probability"] for s in res["region"]["scores"] if s["tag"] == scope)
        findings = [
            {"dimension": d, "tag": t, "label": lab, "probability": round(float(p), 5)}
            for (d, t, lab), p in zip(self.bank.findings, p_pos, strict=True)
            if in_region_vocabulary(scope, d, t)
        ]
        findings.sort(key=lambda f: -f["probability"])
        res["findings"] = findings
        res["findings_region"] = {
            "region": scope,
            "label": scope.replace("_", " "),
            "probability": p_scope,
            "source": "given" if region else "predicted",
        }
        return res

    def thumbnail(self, path: Path) -> str | None:
        """JPEG thumbnail as a data URI (cached; None when the file is missing)."""
        key = str(path)
        if key in self._thumb_cache:
            return self._thumb_cache[key]
        try:
            data = Path(path).read_bytes()
        except OSError:
            return None
        uri = "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")
        if len(self._thumb_cache) < 20_000:
            self._thumb_cache[key] = uri
        return uri

    def similar_cases(self, out: ForwardOut) -> list[dict[str, Any]] | None:
        if out.hits is None:
            return None
        cases = []
        for h in out.hits:
            cases.append(
                {
                    "id": h.id,
                    "rank": getattr(h, "rank", len(cases)),
                    "score": round(float(h.score), 5),
                    "report": h.report,
                    "region": h.region,
                    "organ": getattr(h, "organ", None),
                    "diagnosis": h.diagnosis,
                    "view": getattr(h, "view", None),
                    "thumbnail": self.thumbnail(h.thumb_path) if self.thumbnails_inline else None,
                    "thumbnail_url": f"/api/thumb/{h.id}",
                }
            )
        return cases

    def segmentation(self, image: np.ndarray, out: ForwardOut) -> dict[str, Any] | None:
        """Overlay PNG (colours by MASK_LABELS id) and the image fraction of each predicted structure."""
        if out.seg_labels is None:
            return None
        ids = self.seg_ids
        lab = np.asarray(ids, np.uint8)[out.seg_labels]  # channel index -> MASK_LABELS id
        names = dict(zip(ids, seg_label_names(self.seg, ids), strict=True))
        areas = {names[int(i)]: round(float((lab == i).mean()), 5) for i in np.unique(lab) if i != 0}
        return {"overlay": png_data_uri(overlay(image, lab)), "area_fraction": areas}

    def chat(self, image: np.ndarray, question: str | None) -> str:
        """The VLM's answer (a draft report when `question` is None)."""
        with torch.inference_mode():
            return str(self.vlm.chat([image], question))

    def chat_checked(self, image: np.ndarray, question: str | None) -> dict[str, Any]:
        """The VLM's answer with its low-confidence flag (`sonofm.models.vlm_confidence`):
        {text, mean_logprob, low_confidence, reasons}; models without a check pass unflagged."""
        with torch.inference_mode():
            if hasattr(self.vlm, "chat_checked"):
                return self.vlm.chat_checked([image], question).to_dict()
            return {"text": str(self.vlm.chat([image], question)), "low_confidence": False, "reasons": []}

    def preview(self, image: np.ndarray) -> str:
        return png_data_uri(_fit(image))
