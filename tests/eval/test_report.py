"""report.html: self-contained (figures inline, no scripts, no external URLs) and opens in a real browser."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from sonofm.eval.runner import run_suite
from tests.browser import chromium_page, save_screenshot

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


def test_report_opens_in_headless_chromium(report):
    with chromium_page() as (page, errors):
        page.goto(Path(report).resolve().as_uri(), wait_until="load")
        n_imgs = page.evaluate("document.images.length")
        broken = page.evaluate("[...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).length")
        shot = save_screenshot(page, "eval_report.png")
    assert errors == []
    assert n_imgs >= 8 and broken == 0
    assert shot.stat().st_size > 10_000
