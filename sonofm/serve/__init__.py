"""Serving: case-retrieval index, ONNX export, and the FastAPI app.

Names are imported lazily so `import sonofm.serve` stays free of torch, FAISS and onnxruntime.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build_index": "sonofm.serve.index",
    "build_faiss": "sonofm.serve.index",
    "CaseIndex": "sonofm.serve.index",
    "Hit": "sonofm.serve.index",
    "read_query_image": "sonofm.serve.index",
    "load_encoder": "sonofm.serve.index",
    "export_onnx": "sonofm.serve.export",
    "OnnxDualEncoder": "sonofm.serve.export",
    "ExportCheckError": "sonofm.serve.export",
    "create_app": "sonofm.serve.app",
    "ServeSettings": "sonofm.serve.settings",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sonofm.serve' has no attribute {name!r}")
