"""Zero-shot heads of the analysis: prompt banks, one matmul of image against text embeddings.

The prompts and the mean-of-normalised-prompts rule are the eval suite's, so the server's
probabilities are the ones the suite measures (see :mod:`sonofm.serve.analyze`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sonofm import taxonomy as tx
from sonofm.inference.embed import embed_texts
from sonofm.reports import prompts as P
from sonofm.reports.prompts import class_prompts

log = logging.getLogger(__name__)


ATTRIBUTE_DIMS = ("diagnosis", "shape", "margin", "echogenicity", "internal", "posterior", "vascularity")


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
    """(N, D) unit embeddings of `texts` via `sonofm.inference.embed.embed_texts` (dedup + length sort)."""
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
