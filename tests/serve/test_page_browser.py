"""Browser test of the web page: a real uvicorn server on loopback, Debian chromium via playwright.

Uploads a simulated image through the page's file input, waits for findings and similar cases,
checks there are no console errors, saves artifacts/serve_page.png, then drops a text file on the
drop zone and checks the page shows the server's 415 message.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.browser import chromium_page, save_screenshot
from tests.serve.test_app import build_tiny_assets

uvicorn = pytest.importorskip("uvicorn")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model on a shared 2-core machine: one thread is far faster
    try:
        yield from _serve(tmp_path_factory)
    finally:
        torch.set_num_threads(threads)


def _serve(tmp_path_factory):
    from sonofm.serve.app import create_app
    from sonofm.serve.settings import ServeSettings

    data, model_dir, index = build_tiny_assets(tmp_path_factory.mktemp("page"))
    app = create_app(ServeSettings(model=str(model_dir), index=str(index)))
    port = _free_port()
    srv = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    t0 = time.time()
    while not srv.started:
        if time.time() - t0 > 60 or not th.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", data
    srv.should_exit = True
    th.join(10)


def test_page_upload_shows_findings_and_similar_cases(server):
    base, data = server
    image = sorted((data / "images").glob("*.png"))[3]
    with chromium_page(1280, 1000) as (page, errors):
        page.goto(base + "/")
        page.wait_for_function("document.getElementById('status').textContent.startsWith('ready')")
        assert page.is_visible("#k-row") and not page.is_visible("#question-row")
        page.fill("#k", "3")
        page.set_input_files("#file", str(image))  # the change event starts the analysis
        page.wait_for_selector("#results:not([hidden])", timeout=60_000)
        page.wait_for_selector("#cases .case")
        assert page.locator("#findings li").count() == 10
        first = page.locator("#findings li .bar-value").first.text_content()
        assert first.endswith("%")
        assert page.locator("#cases .case").count() == 3
        assert page.locator("#cases .case img").count() == 3
        assert page.locator("#cases .case-report").first.text_content().strip()
        assert "Region" in page.locator("#summary").text_content()
        assert page.locator("#attributes .attr").count() == 7
        assert page.is_hidden("#report-card") and page.is_hidden("#overlay-controls")
        assert page.evaluate("document.getElementById('preview').naturalWidth") > 0
        assert errors == [], errors
        save_screenshot(page, "serve_page.png")
        page.click("#more-findings")
        assert page.locator("#findings li").count() > 10

        # drag and drop a text file: the server's 415 message is shown, the page keeps working
        page.evaluate(
            """() => {
                const dt = new DataTransfer();
                dt.items.add(new File(["not an image"], "notes.txt", {type: "text/plain"}));
                const ev = new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true});
                document.getElementById('drop').dispatchEvent(ev);
            }"""
        )
        page.wait_for_selector("#error:not([hidden])")
        msg = page.locator("#error").text_content()
        assert "415" in msg and "expected a PNG, JPEG or DICOM" in msg
        # chromium logs the failed fetch itself as a console error; nothing else may appear
        assert all("status of 415" in e for e in errors), errors


def test_api_docs_render_offline(server):
    """/docs uses local Swagger UI assets: it renders the API with no request leaving loopback."""
    base, _ = server
    outside: list[str] = []
    with chromium_page() as (page, errors):
        page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(base) else None)
        page.goto(f"{base}/docs", wait_until="networkidle")
        page.wait_for_selector(".opblock-summary-path", timeout=20_000)
        paths = page.eval_on_selector_all(".opblock-summary-path", "els => els.map(e => e.dataset.path)")
        save_screenshot(page, "serve_docs.png")
    assert "/api/analyze" in paths and "/health" in paths
    assert errors == []
    assert [u for u in outside if not u.startswith("data:")] == []
