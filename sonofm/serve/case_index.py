"""A loaded case index (`CaseIndex`) and its hits; query images for searching it.

The directory format is described in :mod:`sonofm.serve.index`; building one is
:mod:`sonofm.serve.index_build`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import UnidentifiedImageError

from sonofm.errors import UserError
from sonofm.records import pick
from sonofm.serve.faiss_index import _faiss, normalize_rows, set_search_params

log = logging.getLogger(__name__)

THUMB_SIZE = 128
INDEX_FILE = "index.faiss"
META_FILE = "meta.parquet"
INFO_FILE = "index.json"
THUMB_DIR = "thumbs"
META_COLUMNS = ("id", "image", "thumb", "report", "region", "organ", "diagnosis", "view", "patient_id")
FORMAT = "sonofm-case-index"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Hit:
    """One retrieved case. `score` is cosine similarity (inner product of unit vectors)."""

    id: str
    score: float
    report: str
    region: str
    diagnosis: str | None
    thumb_path: Path  # absolute path of thumbs/<id>.jpg
    organ: str | None = None
    view: str | None = None
    patient_id: str | None = None
    image_path: Path | None = None  # absolute path of the original image (may not exist on a server)
    rank: int = 0  # 0-based position in the result list

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (paths as strings) for APIs."""
        return pick(
            self,
            *("id", "score", "rank", "report", "region", "organ", "diagnosis", "view", "patient_id"),
            thumb_path=str(self.thumb_path),
            image_path=None if self.image_path is None else str(self.image_path),
        )


# ---------------------------------------------------------------- the index object


def _str_or_none(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    s = str(v)
    return s or None


@dataclass
class CaseIndex:
    """A loaded case index: FAISS index + metadata rows (row i = FAISS id i) + index.json."""

    path: Path
    index: Any
    meta: pd.DataFrame
    info: dict[str, Any]
    _id_pos: dict[str, int] = field(default_factory=dict, repr=False)
    _patient_count: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._id_pos = {str(i): p for p, i in enumerate(self.meta["id"])}
        pids = self.meta["patient_id"].map(_str_or_none)
        self._patient_count = pids.dropna().value_counts().to_dict()

    # ----- loading -----
    @classmethod
    def load(cls, path: str | Path, *, model: Any | None = None) -> CaseIndex:
        """Open an index directory written by `build_index`; UserError naming what is missing or wrong.

        With `model`, its embedding size is checked against the index's (`check_model`).
        """
        faiss = _faiss()
        p = Path(path).expanduser()
        if not p.is_dir():
            raise UserError(f"index directory {p} does not exist (build one with `sonofm index build`)")
        for name in (INDEX_FILE, META_FILE, INFO_FILE):
            if not (p / name).is_file():
                raise UserError(f"{p} is not a sonofm case index: {name} is missing")
        try:
            info = json.loads((p / INFO_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise UserError(f"cannot parse {p / INFO_FILE}: {e}") from e
        if info.get("format") != FORMAT:
            raise UserError(f"{p / INFO_FILE}: format is {info.get('format')!r}, expected {FORMAT!r}")
        try:
            index = faiss.read_index(str(p / INDEX_FILE))
        except RuntimeError as e:
            raise UserError(f"cannot read FAISS index {p / INDEX_FILE}: {e}") from e
        meta = pd.read_parquet(p / META_FILE)
        missing = [c for c in META_COLUMNS if c not in meta.columns]
        if missing:
            raise UserError(f"{p / META_FILE} lacks columns {missing}")
        if index.ntotal != len(meta) or index.d != int(info.get("dim", index.d)):
            raise UserError(
                f"{p}: {INDEX_FILE} holds {index.ntotal} vectors of dim {index.d} but {META_FILE} has "
                f"{len(meta)} rows and {INFO_FILE} says dim {info.get('dim')}: the index is inconsistent"
            )
        out = cls(path=p.resolve(), index=index, meta=meta.reset_index(drop=True), info=info)
        set_search_params(index, nprobe=info.get("nprobe"), ef_search=info.get("efSearch"))
        if model is not None:
            out.check_model(model)
        return out

    # ----- properties -----
    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def kind(self) -> str:
        return str(self.info.get("kind"))

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def set_search_params(self, *, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Recall/speed knobs: IVF `nprobe` (lists visited), HNSW `efSearch` (candidate list size)."""
        set_search_params(self.index, nprobe=nprobe, ef_search=ef_search)

    def check_model(self, model: Any) -> None:
        """UserError when `model`'s embedding size differs from the index's (index built by another model)."""
        d = int(model.config.embed_dim)
        if d != self.dim:
            raise UserError(
                f"model embeds to dim {d} but index {self.path} holds dim {self.dim} vectors (built with "
                f"model {self.info.get('model_dir')}); rebuild the index with this model"
            )

    def vector(self, case_id: str) -> np.ndarray:
        """The stored (normalised) vector of a case, (D,) float32 (flat/HNSW/IVF all reconstruct)."""
        if case_id not in self._id_pos:
            raise UserError(f"case id {case_id!r} is not in index {self.path}")
        with contextlib.suppress(AttributeError, RuntimeError):
            self.index.make_direct_map()  # IVF needs it to reconstruct (flat/HNSW do not have it)
        return np.asarray(self.index.reconstruct(self._id_pos[case_id]), dtype=np.float32)

    # ----- search -----
    def search(
        self,
        vectors: np.ndarray | Any,
        k: int,
        *,
        exclude_ids: Sequence[str | None] | None = None,
        exclude_patients: Sequence[str | None] | None = None,
    ) -> list[list[Hit]]:
        """Top-k cases for each query row of `vectors` (Q, D), best first.

        Vectors are L2-normalised here (already-normalised input is unchanged); a torch tensor is
        accepted. `exclude_ids[i]` / `exclude_patients[i]` drop the query's own case / all cases of
        its patient from row i's results (the search over-fetches so k hits remain when possible).
        """
        if hasattr(vectors, "detach"):
            vectors = vectors.detach().float().cpu().numpy()
        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise UserError(
                f"query vectors have shape {tuple(x.shape)} but index {self.path} holds dim {self.dim} "
                f"vectors (built with model {self.info.get('model_dir')}); use the same model"
            )
        k = int(k)
        if k < 1:
            raise UserError(f"k must be >= 1, got {k}")
        q = len(x)
        for name, seq in (("exclude_ids", exclude_ids), ("exclude_patients", exclude_patients)):
            if seq is not None and len(seq) != q:
                raise ValueError(f"{name} has {len(seq)} entries for {q} queries")
        extra = 0
        if exclude_ids is not None:
            extra += 1
        if exclude_patients is not None:
            extra += max((self._patient_count.get(str(p), 0) for p in exclude_patients if p), default=0)
        fetch = min(k + extra, len(self))
        if q == 0 or fetch == 0:
            return [[] for _ in range(q)]
        scores, idx = self.index.search(normalize_rows(x), fetch)
        out: list[list[Hit]] = []
        for i in range(q):
            drop_id = None if exclude_ids is None else exclude_ids[i]
            drop_pid = None if exclude_patients is None else exclude_patients[i]
            hits: list[Hit] = []
            for s, j in zip(scores[i], idx[i], strict=True):
                if j < 0:
                    break  # fewer results than asked (IVF with small nprobe)
                hit = self._hit(int(j), float(s), len(hits))
                if (drop_id is not None and hit.id == str(drop_id)) or (
                    drop_pid is not None and hit.patient_id == str(drop_pid)
                ):
                    continue
                hits.append(hit)
                if len(hits) == k:
                    break
            out.append(hits)
        return out

    def search_text(self, model: Any, text: str | Sequence[str], k: int) -> list[list[Hit]]:
        """Cases whose images best match each text (text-to-image retrieval); one list per text.

        `model` is a `DualEncoder` or an `OnnxDualEncoder` (anything with tokenize + encode_text).
        """
        texts = [text] if isinstance(text, str) else list(text)
        self.check_model(model)
        tok = model.tokenize(texts)
        ids, mask = _model_input(model, tok["input_ids"]), _model_input(model, tok["attention_mask"])
        emb = _no_grad(lambda: model.encode_text(ids, mask, normalize=True))
        return self.search(emb, k)

    def search_images(self, model: Any, images: Any, k: int, **exclude: Any) -> list[list[Hit]]:
        """Cases most similar to each image of `images` ((B, 1|3, S, S) float in [0, 1], numpy or torch).

        `exclude` is passed to `search` (`exclude_ids=`, `exclude_patients=`).
        """
        self.check_model(model)
        x = _model_input(model, images)
        emb = _no_grad(lambda: model.encode_image(x, normalize=True))
        return self.search(emb, k, **exclude)

    def _hit(self, j: int, score: float, rank: int) -> Hit:
        r = self.meta.iloc[j]
        img = _str_or_none(r["image"])
        return Hit(
            id=str(r["id"]),
            score=score,
            report=_str_or_none(r["report"]) or "",
            region=_str_or_none(r["region"]) or "",
            diagnosis=_str_or_none(r["diagnosis"]),
            thumb_path=self.path / str(r["thumb"]),
            organ=_str_or_none(r["organ"]),
            view=_str_or_none(r["view"]),
            patient_id=_str_or_none(r["patient_id"]),
            image_path=None if img is None else (self.path / img).resolve(),
            rank=rank,
        )


def _model_input(model: Any, x: Any) -> Any:
    """Inputs for `model`: torch models get tensors on their device; ONNX models take numpy or torch."""
    try:
        import torch  # lazy: keeps torch out of `import sonofm.serve.index`
    except ImportError:  # pragma: no cover - torch is a dependency
        return x
    if not isinstance(model, torch.nn.Module):
        return x
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    p = next(model.parameters(), None)
    return t.to(p.device) if p is not None else t


def _no_grad(fn: Callable[[], Any]) -> Any:
    try:
        import torch  # lazy: keeps torch out of `import sonofm.serve.index`
    except ImportError:  # pragma: no cover - torch is a dependency
        return fn()
    with torch.inference_mode():
        return fn()


# ---------------------------------------------------------------- query images


def read_query_image(path: str | Path, image_size: int) -> np.ndarray:
    """A PNG/JPEG file -> (1, 1, S, S) float32 in [0, 1], decoded and resized like the training data."""
    from sonofm.data.transforms import (  # lazy: imports torch; `import sonofm.serve.index` stays torch-free
        read_gray,
        resize_image,
        to_unit,
    )

    p = Path(path)
    if not p.is_file():
        raise UserError(f"query image {p} does not exist")
    try:
        arr = read_gray(p)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise UserError(f"cannot decode query image {p} (expected PNG or JPEG): {e}") from e
    return to_unit(resize_image(arr, image_size))[None, None]
