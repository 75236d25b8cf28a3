"""The `sonofm serve` web service: the FastAPI app factory, wiring loaded state, routers and middleware.

Routes (OpenAPI docs at /docs, schema at /openapi.json), one router each in `sonofm.serve.routes`:

- `GET /health`   liveness: the process answers (always open, no auth)
- `GET /ready`    readiness: models loaded, text bank cached, batcher running (503 otherwise)
- `GET /`         the web page (static files under /static; no external URLs)
- `GET /api/info` what this server can do (features, limits, whether a token is needed); open
- `POST /api/analyze`  multipart `file` (PNG/JPEG/DICOM) + optional `question`, `k`
- `GET /api/thumb/{case_id}`  a similar case's JPEG thumbnail

Models are loaded once in `load_state` (`sonofm.serve.state`); image forwards of concurrent
requests are grouped by a `MicroBatcher` and run in one worker thread; the optional VLM runs in
its own single thread. Bearer-token auth is checked in an ASGI middleware before any request body
is read, so an unauthenticated client cannot make the server parse uploads. Every request gets a
request id (`X-Request-ID`, echoed or generated) and one JSON access-log line
(`sonofm.serve.middleware`).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.formparsers import MultiPartParser

from sonofm import __version__
from sonofm.serve.middleware import RequestContextMiddleware, add_error_handlers, configure_json_logging
from sonofm.serve.routes import analysis, cases, page, service
from sonofm.serve.routes.analysis import MULTIPART_SLACK
from sonofm.serve.routes.docs import mount_offline_docs
from sonofm.serve.schemas import AnalyzeResponse
from sonofm.serve.settings import ServeSettings
from sonofm.serve.state import ServeState, load_state
from sonofm.serve.state import load_optional as _load_optional  # noqa: F401  (the tests' name for it)

__all__ = ["AnalyzeResponse", "ServeState", "configure_json_logging", "create_app", "load_state"]

log = logging.getLogger(__name__)


def create_app(settings: ServeSettings, *, state: ServeState | None = None) -> FastAPI:
    """The FastAPI app; models are loaded here (or passed in as `state`) so start-up errors surface early."""
    state = state or load_state(settings)
    limit = settings.max_upload_bytes
    # Starlette spools multipart files above 1 MB to a temporary file on disk: raise the spool size
    # to the upload limit so an (identified) DICOM never touches the disk before de-identification.
    MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size, limit + MULTIPART_SLACK)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.batcher.start()
        log.info("ready: %s", json.dumps(state.model_info, default=str))
        try:
            yield
        finally:
            await state.batcher.stop()

    app = FastAPI(
        title="sonofm",
        version=__version__,
        summary="Ultrasound image analysis: zero-shot findings, similar cases, draft reports.",
        description=(
            "Upload a PNG, JPEG or DICOM ultrasound image to `POST /api/analyze`. DICOM is de-identified "
            "in memory (header and burned-in text) and never stored unless the server was started with "
            "`store_uploads`. Send `Authorization: Bearer <token>` when the server requires a token."
        ),
        lifespan=lifespan,
        docs_url=None,  # served by mount_offline_docs from local Swagger UI assets: the default loads a CDN
        redoc_url=None,
    )
    app.state.sonofm = state
    mount_offline_docs(app)
    add_error_handlers(app, settings)
    app.include_router(service.router(state, settings))
    app.include_router(analysis.router(state, settings))
    app.include_router(cases.router(state))
    app.include_router(page.router)
    page.mount_static(app)

    # added first = inner: CORS (outermost) answers preflights, which carry no Authorization header
    too_large = f"upload too large: the limit is {settings.max_upload_mb:g} MB"
    app.add_middleware(
        RequestContextMiddleware,
        token=settings.token,
        body_limits={"/api/analyze": (limit + MULTIPART_SLACK, too_large)},
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID"],
        )
    return app
