"""Serving: case-retrieval index, ONNX export, and the FastAPI app.

Names are imported lazily so `import sonofm.serve` stays free of torch, FAISS and onnxruntime.
"""

from __future__ import annotations

from sonofm.lazy import lazy_exports, lazy_names

_LAZY = {
    "sonofm.serve.index": (
        "build_index",
        "build_faiss",
        "CaseIndex",
        "Hit",
        "read_query_image",
        "load_encoder",
    ),
    "sonofm.serve.export": ("export_onnx", "OnnxDualEncoder", "ExportCheckError"),
    "sonofm.serve.app": ("create_app",),
    "sonofm.serve.settings": ("ServeSettings",),
}
__all__ = lazy_names(_LAZY)
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
