"""The `# lazy:` reasons of the index and export modules hold: importing them imports no torch (#19).

`sonofm serve index/search` and the ONNX runtime side import these; torch, FAISS and onnxruntime
come in only when a function needs them.
"""

from __future__ import annotations

import subprocess
import sys

MODULES = [
    "sonofm.serve",
    "sonofm.serve.index",
    "sonofm.serve.case_index",
    "sonofm.serve.index_build",
    "sonofm.serve.faiss_index",
    "sonofm.serve.export",
]


def test_index_and_export_modules_import_no_torch_faiss_or_onnxruntime():
    code = (
        "import importlib, sys\n"
        f"for m in {MODULES!r}:\n"
        "    importlib.import_module(m)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'faiss', 'onnxruntime', 'onnx'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
