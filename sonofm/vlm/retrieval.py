"""The nearest-neighbour report baseline: the closest training case through the CLIP image index.

Every report-generation paper is measured against it: embed the training images with the
contrastive model's image tower, and for a test image return the report of the most similar
training image (cosine similarity, exact search: FAISS `IndexFlatIP` when FAISS is installed,
else the same inner products in numpy). Its closed-VQA answers are the neighbour's facts: the
answer the neighbour's own manifest row gives to the same question (`answer_from_row`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sonofm import taxonomy as tx
from sonofm.errors import UserError
from sonofm.reports.grounding import ground_study
from sonofm.reports.schema import Study
from sonofm.reports.writer import write_report
from sonofm.vlm.conversations import _mapping, _tag_phrase

log = logging.getLogger(__name__)


@dataclass
class Neighbours:
    """For each query row: the index of its nearest training row and the cosine similarity."""

    index: np.ndarray  # (N,) int positions into the training table
    similarity: np.ndarray  # (N,) float


def _search(train: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-1 inner-product search of L2-normalised rows."""
    try:
        import faiss  # lazy: FAISS is optional here (numpy gives the same result without it)
    except ImportError:  # same result, numpy inner products
        sims = query @ train.T
        idx = sims.argmax(1)
        return idx, sims[np.arange(len(idx)), idx]
    index = faiss.IndexFlatIP(train.shape[1])
    index.add(np.ascontiguousarray(train, dtype=np.float32))
    d, i = index.search(np.ascontiguousarray(query, dtype=np.float32), 1)
    return i[:, 0], d[:, 0]


def nearest_training_cases(
    clip_model: Any, train: pd.DataFrame, train_root: Path, query: pd.DataFrame, query_root: Path
) -> Neighbours:
    """Top-1 neighbour in `train` of every row of `query`, by the CLIP image embedding."""
    from sonofm.inference.embed import embed_images  # lazy: imports torch; this module imports without it

    if not hasattr(clip_model, "encode_image"):
        raise UserError(
            f"retrieval needs a contrastive model with encode_image, got {type(clip_model).__name__}"
        )
    t_ids, t_emb = embed_images(clip_model, train, split=None, root=train_root, workers=0)
    q_ids, q_emb = embed_images(clip_model, query, split=None, root=query_root, workers=0)
    if len(t_ids) != len(train) or len(q_ids) != len(query):
        raise UserError("some images could not be decoded; the retrieval baseline needs all of them")
    idx, sim = _search(t_emb, q_emb)
    return Neighbours(np.asarray(idx, dtype=np.int64), np.asarray(sim, dtype=np.float64))


def answer_from_row(meta: dict[str, Any], row: pd.Series) -> str:
    """The answer `row` (a retrieved training case) gives to a closed question described by `meta`.

    `meta` is the record meta of `sonofm.vlm.conversations` closed questions (kind attribute,
    attribute_mc, threshold, view, view_mc, organ).
    """
    kind = meta.get("kind")
    attrs = _mapping(row.get("attributes"))
    yes = lambda b: "Yes" if b else "No"  # noqa: E731
    if kind == "attribute":
        return yes(meta["tag"] in set(attrs.get(meta["dimension"]) or []))
    if kind == "attribute_mc":
        tags = list(attrs.get(meta["dimension"]) or [])
        return _tag_phrase(meta["dimension"], tags[0]) if tags else ""
    if kind == "threshold":
        v = _mapping(row.get("measurements")).get(meta["measurement"])
        if not isinstance(v, int | float) or v != v:
            return "No"
        return yes(v > meta["threshold"] if meta["above"] else v < meta["threshold"])
    if kind == "view":
        return yes(row.get("view") == meta["view"])
    if kind == "view_mc":
        v = row.get("view")
        return tx.VIEWS[v].phrase if isinstance(v, str) and v in tx.VIEWS else ""
    if kind == "organ":
        return yes(row.get("organ") == meta["organ"])
    raise UserError(f"no retrieval answer for closed-question kind {kind!r}")


def with_study_context(row: pd.Series, context: dict[str, Any] | None) -> pd.Series:
    """The retrieved case `row` given the query study's measurements and sex.

    The retrieval baseline with the same inputs as a generator whose drafts are grounded in the
    study context (`sonofm.reports.grounding`): what the image index finds (organ, view, lesion),
    with the numbers the sonographer measured and the guideline findings those numbers imply in
    place of the neighbour's. Its report is rewritten from the edited structured study by the report writer
    (`retrieved_report`); its closed answers come from the edited row (`answer_from_row`).
    """
    from sonofm.models.vlm_context import clean_context  # lazy: the models package imports torch

    ctx = clean_context(context)
    out = row.copy()
    out["measurements"] = dict(ctx["measurements"])
    out["sex"] = ctx["sex"]
    st = row.get("structured")
    if isinstance(st, dict):  # the generator's drafts are grounded by the same edit
        out["structured"] = ground_study(Study.from_dict(st), ctx["measurements"], ctx["sex"]).to_dict()
    return out


def retrieved_report(row: pd.Series, seed: int = 0) -> str:
    """The report of a (context-edited) retrieved case, written from its structured study."""
    st = row.get("structured")
    if not isinstance(st, dict):
        raise UserError(
            f"retrieved case {row.get('id')!r} has no structured study to rewrite its report from"
        )
    return write_report(Study.from_dict(st), np.random.default_rng(seed))
