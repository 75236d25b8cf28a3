"""The `# lazy:` reasons of the torch-free VLM modules hold: importing them imports no torch (#19)."""

from __future__ import annotations

from tests.fresh_imports import packages_loaded_by

MODULES = [
    "sonofm.vlm",
    "sonofm.vlm.conversations",
    "sonofm.vlm.compare",
    "sonofm.vlm.metrics",
    "sonofm.vlm.retrieval",
]


def test_torch_free_vlm_modules_import_no_torch():
    assert packages_loaded_by(MODULES, {"torch", "transformers", "faiss"}) == []
