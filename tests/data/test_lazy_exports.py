"""`sonofm.data` exports its public API lazily: importing the package must not import torch."""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_manifest_api_without_torch():
    out = _run(
        "import sys, sonofm.data as d\n"
        "assert 'torch' not in sys.modules\n"
        "from sonofm.data import read_manifest, write_manifest, load_dataset\n"
        "from sonofm.data.manifest import read_manifest as r\n"
        "assert read_manifest is r\n"
        "print('torch' in sys.modules)\n"
    )
    assert out.strip() == "False"


def test_torch_api_resolves_and_unknown_name_fails():
    out = _run(
        "import sonofm.data as d\n"
        "from sonofm.data.dataset import UltrasoundDataset\n"
        "from sonofm.data.loader import build_loader\n"
        "assert d.UltrasoundDataset is UltrasoundDataset and d.build_loader is build_loader\n"
        "assert {'read_manifest', 'build_loader'} <= set(dir(d))\n"
        "try:\n    d.no_such_name\nexcept AttributeError as e:\n    print('ok', 'no_such_name' in str(e))\n"
    )
    assert out.strip() == "ok True"
