"""Case-retrieval index: FAISS over L2-normalised image embeddings, with metadata and thumbnails.

An index directory (written atomically: built in a temp dir beside OUT, then renamed):

    index.faiss     FAISS index, inner product on L2-normalised vectors (= cosine similarity);
                    FAISS id i is row i of meta.parquet
    meta.parquet    id, image (path relative to the index dir), thumb (relative), report, region,
                    organ, diagnosis, view, patient_id
    thumbs/<id>.jpg small JPEG thumbnails (longest side THUMB_SIZE px) for result pages
    index.json      model dir + model hash, data card, kind, dim, count, metric "ip", build params,
                    search defaults (nprobe / efSearch), build time, versions

Kinds: "flat" (exact, `IndexFlatIP`), "ivf" (`IndexIVFFlat`, nlist ~ 4 sqrt(n), k-means trained on
a random sample), "hnsw" (`IndexHNSWFlat`, M=32). "auto" picks flat below AUTO_FLAT_MAX vectors and
IVF above (IVF builds far faster than HNSW at 1M and needs no graph memory; HNSW is there for
the lowest latency at high recall). Embeddings come from `sonofm.eval.embed.embed_images` (one
batched loop for the whole toolkit), so undecodable images are skipped and logged there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from sonofm.atomic import atomic_dir, atomic_write_json
from sonofm.errors import DataError, UserError

log = logging.getLogger(__name__)

IndexKind = Literal["auto", "flat", "ivf", "hnsw"]
KINDS = ("auto", "flat", "ivf", "hnsw")
AUTO_FLAT_MAX = 50_000  # below this many vectors exact search is fast enough (< ~5 ms/query)
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 64
DEFAULT_NPROBE = 32
DEFAULT_EF_SEARCH = 128
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
        return {
            "id": self.id,
            "score": self.score,
            "rank": self.rank,
            "report": self.report,
            "region": self.region,
            "organ": self.organ,
            "diagnosis": self.diagnosis,
            "view": self.view,
            "patient_id": self.patient_id,
            "thumb_path": str(self.thumb_path),
            "image_path": None if self.image_path is None else str(self.image_path),
        }


# ---------------------------------------------------------------- FAISS construction


def _faiss() -> Any:
    import faiss

    return faiss


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """float32, C-contiguous, unit L2 rows (zero rows stay zero)."""
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim != 2:
        raise ValueError(f"vectors must be 2-D (N, D), got shape {x.shape}")
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def resolve_kind(kind: str, n: int) -> str:
    """'auto' -> 'flat' below AUTO_FLAT_MAX vectors, else 'ivf'; other kinds are validated."""
    if kind not in KINDS:
        raise UserError(f"index kind {kind!r} is not one of {', '.join(KINDS)}")
    if kind == "auto":
        return "flat" if n < AUTO_FLAT_MAX else "ivf"
    return kind


def default_nlist(n: int) -> int:
    """IVF list count ~ 4 sqrt(n), at least 1 and at most n // 39 (FAISS wants >= 39 points per list)."""
    return int(max(1, min(round(4 * math.sqrt(n)), n // 39 if n >= 39 else 1)))


def default_nprobe(nlist: int) -> int:
    """Lists visited per query: 1/8 of them, at least DEFAULT_NPROBE.

    benchmarks/index.py (1M clustered vectors, nlist 1024): recall@10 0.51 / 0.78 / 0.97 at nprobe
    8 / 32 / 128 with 0.5 / 3 / 20 ms per query vs 90 ms exact. A case search serves a person
    looking at similar cases, so the default buys recall; lower it with `set_search_params`.
    """
    return int(min(nlist, max(DEFAULT_NPROBE, nlist // 8)))


def build_faiss(
    vectors: np.ndarray,
    kind: str = "auto",
    *,
    nlist: int | None = None,
    m: int = HNSW_M,
    ef_construction: int = HNSW_EF_CONSTRUCTION,
    train_per_list: int = 64,
    seed: int = 0,
) -> tuple[Any, dict[str, Any]]:
    """A FAISS inner-product index holding `vectors` (normalised here) with ids 0..N-1, and its params.

    IVF's coarse quantizer is k-means trained on a random sample of `train_per_list * nlist`
    vectors (all of them when fewer): the sample, not N, bounds the training cost at 1M vectors.
    """
    faiss = _faiss()
    x = normalize_rows(vectors)
    n, d = x.shape
    if n == 0:
        raise DataError("cannot build an index from zero vectors")
    kind = resolve_kind(kind, n)
    params: dict[str, Any] = {"kind": kind}
    t0 = time.perf_counter()
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        nl = int(nlist) if nlist else default_nlist(n)
        if nl > n:
            raise UserError(f"IVF needs at least nlist={nl} vectors to train, got {n}")
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nl, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        n_train = min(n, train_per_list * nl)
        rng = np.random.default_rng(seed)
        sample = x if n_train == n else x[np.sort(rng.choice(n, n_train, replace=False))]
        index.train(sample)
        index.nprobe = default_nprobe(nl)
        params.update(nlist=nl, n_train=int(n_train), nprobe=int(index.nprobe))
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = DEFAULT_EF_SEARCH
        params.update(M=m, efConstruction=ef_construction, efSearch=DEFAULT_EF_SEARCH)
    else:  # pragma: no cover - resolve_kind validated it
        raise AssertionError(kind)
    index.add(x)
    params["build_s"] = round(time.perf_counter() - t0, 3)
    return index, params


def set_search_params(index: Any, *, nprobe: int | None = None, ef_search: int | None = None) -> None:
    """Set IVF nprobe / HNSW efSearch on `index` (ignored for kinds that do not have them)."""
    faiss = _faiss()
    if nprobe is not None:
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:
            ivf.nprobe = int(nprobe)
    if ef_search is not None and hasattr(index, "hnsw"):
        index.hnsw.efSearch = int(ef_search)


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
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return x
    if not isinstance(model, torch.nn.Module):
        return x
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    p = next(model.parameters(), None)
    return t.to(p.device) if p is not None else t


def _no_grad(fn: Callable[[], Any]) -> Any:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return fn()
    with torch.inference_mode():
        return fn()


# ---------------------------------------------------------------- query images


def read_query_image(path: str | Path, image_size: int) -> np.ndarray:
    """A PNG/JPEG file -> (1, 1, S, S) float32 in [0, 1], decoded and resized like the training data."""
    from PIL import UnidentifiedImageError

    from sonofm.data.transforms import read_gray, resize_image, to_unit

    p = Path(path)
    if not p.is_file():
        raise UserError(f"query image {p} does not exist")
    try:
        arr = read_gray(p)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise UserError(f"cannot decode query image {p} (expected PNG or JPEG): {e}") from e
    return to_unit(resize_image(arr, image_size))[None, None]


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
    from PIL import Image

    from sonofm.data.decode import ImageDecodeError, open_image

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
        from sonofm.serve.export import OnnxDualEncoder

        enc = OnnxDualEncoder.load(model_dir)
        return enc, str(enc.info.get("model_hash", ""))
    from sonofm.eval.embed import model_hash, pick_device
    from sonofm.models.io import load_model

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
        info.get("model_dir") == settings["model"] and info.get("split") == settings["split"]
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
    from sonofm import __version__
    from sonofm.data.manifest import load_dataset
    from sonofm.eval.embed import embed_images
    from sonofm.outdir import open_output

    if kind not in KINDS:
        raise UserError(f"index kind {kind!r} is not one of {', '.join(KINDS)}")
    # an existing index is rebuilt only by the same build (same model, data, split, kind)
    settings = {"model": str(Path(model_dir).expanduser().resolve()),
                "data": str(Path(data_dir).expanduser().resolve()), "split": split, "kind": kind}
    claim = open_output(
        Path(out).expanduser(), job="index build", settings=settings, overwrite=overwrite,
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
