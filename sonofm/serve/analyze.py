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

Zero-shot scoring reuses the eval suite's definitions (`sonofm.reports.prompts.class_prompts`,
`sonofm.reports.prompts.all_prompt_pairs` / `attribute_prompts`, `EvalContext.class_weights`'s
mean-of-normalised-prompts rule), so the server's probabilities are the ones the suite measures.

Stage 1 lives in `sonofm.serve.upload`, the zero-shot heads in `sonofm.serve.zeroshot_heads`, the
segmentation overlay in `sonofm.serve.seg_overlay`; this module keeps stages 2 and 3 (`Analyzer`)
and re-exports every name it had.
"""

from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sonofm import taxonomy as tx
from sonofm.errors import UserError
from sonofm.serve.seg_overlay import (  # noqa: F401 (re-exported)
    OVERLAY_COLOURS,
    _seg_logits,
    overlay,
    seg_label_ids,
    seg_label_names,
    seg_labels_from_logits,
)
from sonofm.serve.upload import (  # noqa: F401 (re-exported)
    _MAGIC,
    _OTHER_MAGIC,
    MAX_PIXELS,
    PREVIEW_SIZE,
    DecodedUpload,
    UploadError,
    _decode_dicom,
    _decode_raster,
    _fit,
    decode_upload,
    new_deidentifier,
    png_data_uri,
    sniff_kind,
    to_model_input,
)
from sonofm.serve.zeroshot_heads import (  # noqa: F401 (re-exported)
    ATTRIBUTE_DIMS,
    Head,
    TextBank,
    _class_weights,
    _onnx_log_scale,
    _softmax,
    _tag_label,
    _to_numpy,
    encode_prompts,
    in_region_vocabulary,
    model_logit_scale,
)

log = logging.getLogger(__name__)


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

    def chat_checked(
        self, image: np.ndarray, question: str | None, context: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The VLM's answer with its low-confidence flag (`sonofm.models.vlm_confidence`):
        {text, mean_logprob, low_confidence, reasons}; models without a check pass unflagged."""
        with torch.inference_mode():
            if hasattr(self.vlm, "chat_checked"):
                return self.vlm.chat_checked([image], question, context=context).to_dict()
            return {"text": str(self.vlm.chat([image], question)), "low_confidence": False, "reasons": []}

    def preview(self, image: np.ndarray) -> str:
        return png_data_uri(_fit(image))
