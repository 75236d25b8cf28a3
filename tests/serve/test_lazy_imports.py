"""The `# lazy:` reasons of the index and export modules hold: importing them imports no torch (#19).

`sonofm serve index/search` and the ONNX runtime side import these; torch, FAISS and onnxruntime
come in only when a function needs them.
"""

from __future__ import annotations

from tests.fresh_imports import packages_loaded_by

MODULES = [
    "sonofm.serve",
    "sonofm.serve.index",
    "sonofm.serve.case_index",
    "sonofm.serve.index_build",
    "sonofm.serve.faiss_index",
    "sonofm.serve.export",
]


def test_index_and_export_modules_import_no_torch_faiss_or_onnxruntime():
    assert packages_loaded_by(MODULES, {"torch", "faiss", "onnxruntime", "onnx"}) == []
