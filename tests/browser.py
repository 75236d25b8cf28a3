"""Headless Debian chromium for browser tests (HTML reports, the web app).

Driven by playwright's Python API with `executable_path` (playwright's own browser download
cannot run here). The flags keep chromium off the closed network. Tests skip when chromium or
playwright is missing, unless SONOFM_REQUIRE_BROWSER=1 (set by `.ci/run`), where they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Screenshots land here so a person can look at them after a run.
SCREENSHOT_DIR = Path(os.environ.get("SONOFM_SCREENSHOT_DIR", Path(__file__).parent.parent / "artifacts"))


def chromium_path() -> str | None:
    env = os.environ.get("SONOFM_CHROMIUM")
    if env:
        return env
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _unavailable(reason: str) -> None:
    if os.environ.get("SONOFM_REQUIRE_BROWSER") == "1":
        pytest.fail(f"browser test required but {reason}")
    pytest.skip(reason)


@contextlib.contextmanager
def chromium_page(width: int = 1280, height: int = 900) -> Iterator[tuple[object, list[str]]]:
    """Yield (page, console_errors); errors collect console errors and uncaught exceptions."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed")
    exe = chromium_path()
    if exe is None:
        _unavailable("chromium is not installed (apt-get install chromium)")
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            yield page, errors
        finally:
            browser.close()


def save_screenshot(page, name: str) -> Path:
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / name
    page.screenshot(path=str(path), full_page=True)
    return path
