"""Which heavy packages a fresh interpreter loads when it imports some sonofm modules.

The `# lazy:` reasons that say "keeps torch out" are claims about a whole import chain, which only a
new process can check (this test process has torch loaded already)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable


def packages_loaded_by(modules: Iterable[str], packages: Iterable[str]) -> list[str]:
    """The ``packages`` (top-level names) that importing ``modules`` in a fresh interpreter loads."""
    code = (
        "import importlib, json, sys\n"
        f"for m in {list(modules)!r}:\n"
        "    importlib.import_module(m)\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(packages)!r}))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out)
