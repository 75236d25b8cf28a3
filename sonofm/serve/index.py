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
the lowest latency at high recall). Embeddings come from `sonofm.inference.embed.embed_images` (one
batched loop for the whole toolkit), so undecodable images are skipped and logged there.

The code is split by job: `faiss_index` (index kinds and construction), `case_index` (loading
and searching an index, query images), `index_build` (writing an index directory); this module
re-exports every name it had.
"""

from __future__ import annotations

from sonofm.serve.case_index import (  # noqa: F401
    FORMAT,
    FORMAT_VERSION,
    INDEX_FILE,
    INFO_FILE,
    META_COLUMNS,
    META_FILE,
    THUMB_DIR,
    THUMB_SIZE,
    CaseIndex,
    Hit,
    read_query_image,
)
from sonofm.serve.faiss_index import (  # noqa: F401
    AUTO_FLAT_MAX,
    DEFAULT_EF_SEARCH,
    DEFAULT_NPROBE,
    HNSW_EF_CONSTRUCTION,
    HNSW_M,
    KINDS,
    IndexKind,
    _faiss,
    build_faiss,
    default_nlist,
    default_nprobe,
    normalize_rows,
    resolve_kind,
    set_search_params,
)
from sonofm.serve.index_build import build_index, is_onnx_export, load_encoder  # noqa: F401
