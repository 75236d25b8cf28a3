"""`/docs` served from local Swagger UI assets, so the API docs work on a closed network."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles

log = logging.getLogger("sonofm.serve.app")  # the service's log lines keep one logger name


def mount_offline_docs(app: FastAPI) -> None:
    """`/docs` with Swagger UI 5 assets from the `fastapi-offline` package, so the API docs work
    without internet (hospital networks are often closed; FastAPI's default page loads a CDN).
    Without that package `/docs` is absent and `/openapi.json` still describes the API."""
    try:
        import fastapi_offline  # lazy: optional package; without it /docs is off, the app still starts
    except ImportError:
        log.warning("fastapi-offline is not installed: /docs is off (the schema is at /openapi.json)")
        return
    assets = Path(fastapi_offline.__file__).parent / "static"
    app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Any:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon.png",
        )
