"""Similar-case routes: the thumbnail of an indexed case (the ids `POST /api/analyze` returned)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from sonofm.serve.middleware import BEARER_AUTH
from sonofm.serve.state import ServeState


def router(state: ServeState) -> APIRouter:
    routes = APIRouter()

    @routes.get(
        "/api/thumb/{case_id}",
        tags=["analysis"],
        summary="Thumbnail of an indexed case",
        response_class=FileResponse,
        dependencies=[BEARER_AUTH],
        responses={404: {"description": "no index, or no such case"}},
    )
    async def thumb(case_id: str) -> FileResponse:
        path = state.thumbs.get(case_id)  # only ids of the index: no path is built from user input
        if path is None or not path.is_file():
            raise HTTPException(404, f"no thumbnail for case {case_id!r}")
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    return routes
