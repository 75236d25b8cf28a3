"""The `# lazy:` reasons of the torch-free VLM modules hold: importing them imports no torch (#19)."""

from __future__ import annotations

import subprocess
import sys

MODULES = [
    "sonofm.vlm",
    "sonofm.vlm.conversations",
    "sonofm.vlm.compare",
    "sonofm.vlm.metrics",
    "sonofm.vlm.retrieval",
]


def test_torch_free_vlm_modules_import_no_torch():
    code = (
        "import importlib, sys\n"
        f"for m in {MODULES!r}:\n"
        "    importlib.import_module(m)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'faiss'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
