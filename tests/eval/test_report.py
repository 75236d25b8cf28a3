"""report.html: self-contained (figures inline, no scripts, no external URLs) and opens in a real browser."""

from __future__ import annotations

import base64
import os
import re
import shutil
from pathlib import Path

import pytest

from sonofm.eval.runner import run_suite

SUITE = """
name: report-test
n_boot: 20
tasks:
  - {type: zeroshot_classification, target: region}
  - {type: zeroshot_findings, tags: false, split: train}
  - {type: retrieval, examples: 3}
  - {type: linear_probe, target: region}
  - {type: regression_probe, targets: [lvef_pct]}
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory, sim_data, model_a):
    d = tmp_path_factory.mktemp("report")
    (d / "suite.yaml").write_text(SUITE)
    run_suite([str(model_a)], sim_data, d / "out", d / "suite.yaml", cache_dir=False)
    return d / "out" / "report.html"


def test_html_is_self_contained(report):
    text = report.read_text()
    assert text.startswith("<!DOCTYPE html>")
    assert "<script" not in text.lower()
    assert not re.search(r'(src|href)="(https?:|//)', text)  # nothing fetched from the network
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(imgs) >= 8
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in imgs)
    for needle in ("ROC", "confusion matrix", "reliability diagram", "Retrieval examples", "t-SNE"):
        assert needle in text, needle
    assert text.count('class="ex"') == 3  # retrieval examples with thumbnails


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return os.environ.get("SONOFM_CHROMIUM")


def test_report_opens_in_headless_chromium(report, tmp_path):
    """Needs Debian chromium (`apt-get install chromium`) and playwright's Python package."""
    sync_api = pytest.importorskip("playwright.sync_api")
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium is not installed")
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(Path(report).resolve().as_uri(), wait_until="load")
        n_imgs = page.evaluate("document.images.length")
        broken = page.evaluate("[...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).length")
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert errors == []
    assert n_imgs >= 8 and broken == 0
    assert shot.stat().st_size > 10_000
