"""sonofm.taxonomy must stay importable without torch (docs/design.md, "Layers")."""

from __future__ import annotations

import subprocess
import sys


def test_importing_taxonomy_does_not_import_torch():
    code = (
        "import sys; import sonofm.taxonomy as t; t.evaluate_guidelines({'lvef_pct': 40}, 'F'); "
        "t.tirads({'internal': ['solid']}); t.birads({}); "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
