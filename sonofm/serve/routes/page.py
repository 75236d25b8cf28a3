"""The web page: GET / and its static files (no external URLs; a strict Content-Security-Policy)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent.parent / "static"
# the page loads only its own files and inline data: URIs (thumbnails, overlays)
PAGE_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)

router = APIRouter()


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(
        STATIC_DIR / "index.html",
        media_type="text/html",
        headers={"Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff"},
    )


def mount_static(app: FastAPI) -> None:
    """Serve the page's own files under /static (an app-level mount: routers carry no mounts)."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
