"""Service routes: liveness, readiness and what this server can do (all open, even with a token)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from sonofm import __version__
from sonofm.serve.settings import ServeSettings
from sonofm.serve.state import ServeState


def router(state: ServeState, settings: ServeSettings) -> APIRouter:
    routes = APIRouter()

    @routes.get("/health", tags=["service"], summary="Liveness")
    async def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @routes.get("/ready", tags=["service"], summary="Readiness: models loaded and batcher running")
    async def ready() -> JSONResponse:
        ok = state.batcher.running
        body = {
            "ready": ok,
            "models": state.model_info,
            "load_s": round(state.load_s, 3),
            "batcher": state.batcher.stats.to_dict(),
            "text_prompts_cached": state.analyzer.bank.n_prompts,
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    @routes.get("/api/info", tags=["service"], summary="Features and limits of this server")
    async def info() -> dict[str, Any]:
        a = state.analyzer
        return {
            "version": __version__,
            "backend": a.backend,
            "auth_required": settings.token is not None,
            "max_upload_mb": settings.max_upload_mb,
            "default_k": settings.default_k,
            "max_k": settings.max_k,
            "image_size": a.image_size,
            "features": {
                "similar_cases": a.index is not None,
                "report": a.vlm is not None,
                "segmentation": a.seg is not None,
            },
            "index_size": len(a.index) if a.index is not None else 0,
        }

    return routes
