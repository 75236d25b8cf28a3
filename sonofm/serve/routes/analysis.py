"""The analysis route: POST /api/analyze, one uploaded image in, findings and the rest out.

The upload is decoded (and a DICOM de-identified) in a worker thread, its image forward joins the
others in the `MicroBatcher`, and the optional VLM runs in its own single thread. The client's
file name is never echoed, logged or stored.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from sonofm import taxonomy as tx
from sonofm.atomic import atomic_write_text
from sonofm.data.pngio import write_png
from sonofm.errors import UserError
from sonofm.serve.analyze import DecodedUpload, UploadError, decode_upload
from sonofm.serve.middleware import BEARER_AUTH, json_error
from sonofm.serve.schemas import AnalyzeResponse
from sonofm.serve.settings import ServeSettings
from sonofm.serve.state import ServeState

MULTIPART_SLACK = 64 * 1024  # multipart boundaries + the small form fields on top of the file


def router(state: ServeState, settings: ServeSettings) -> APIRouter:
    routes = APIRouter()
    limit = settings.max_upload_bytes

    @routes.post(
        "/api/analyze",
        tags=["analysis"],
        summary="Analyze one ultrasound image",
        response_model=AnalyzeResponse,
        response_model_exclude_none=False,
        max_body_size=limit + MULTIPART_SLACK,
        dependencies=[BEARER_AUTH],
        form_limits={"max_files": 1, "max_fields": 8, "max_part_size": 64 * 1024},
        responses={
            400: {"description": "empty upload"},
            401: {"description": "missing or wrong bearer token"},
            413: {"description": "upload larger than max_upload_mb"},
            415: {"description": "not a PNG, JPEG or DICOM file"},
            422: {"description": "corrupt image/DICOM or invalid form fields"},
        },
    )
    async def analyze(
        request: Request,
        file: Annotated[UploadFile, File(description="PNG, JPEG or DICOM (.dcm) image")],
        question: Annotated[str | None, Form(max_length=500, description="a question for the VLM")] = None,
        k: Annotated[int | None, Form(ge=1, description="number of similar cases")] = None,
        region: Annotated[
            str | None,
            Form(max_length=40, description="the body region, if known: findings use its vocabulary"),
        ] = None,
        measurements: Annotated[
            str | None,
            Form(
                max_length=4000,
                description='the study\'s measurements as JSON ({"lvef_pct": 38, ...}): the draft '
                "report states them and the guideline findings they imply (sonofm.reports.grounding)",
            ),
        ] = None,
        sex: Annotated[str | None, Form(max_length=10, description="patient sex (M/F) for the draft")] = None,
    ) -> Any:
        rid = request.state.request_id
        t0 = time.perf_counter()
        k = settings.default_k if k is None else k
        if k > settings.max_k:
            return json_error(422, f"field 'k': must be <= {settings.max_k}, got {k}", rid)
        try:
            context = study_context(state.analyzer.vlm, measurements, sex)
        except UserError as e:
            return json_error(422, str(e), rid)
        if region is not None and region not in tx.REGIONS:
            return json_error(
                422, f"field 'region': must be one of {', '.join(tx.REGIONS)}, got {region!r}", rid
            )
        data = await file.read(limit + 1)
        if len(data) > limit:
            return json_error(413, f"upload too large: the limit is {settings.max_upload_mb:g} MB", rid)
        # the client's file name is never echoed or logged (PACS exports are named after patients):
        # only whether it says DICOM, which sniffing needs for files without the DICM preamble
        name = upload_name(file.filename)
        try:
            decoded, job = await run_in_threadpool(_decode, state, data, name, file.content_type or "", k)
        except UploadError as e:
            request.scope["state"]["log_extra"] = {"error": e.message}
            return json_error(e.status, e.message, rid)
        t1 = time.perf_counter()
        out = await state.batcher.submit(job)
        t2 = time.perf_counter()
        a = state.analyzer
        preds = a.predictions(out, region=region)
        cases, seg, preview = await run_in_threadpool(
            lambda: (a.similar_cases(out), a.segmentation(decoded.image, out), a.preview(decoded.image))
        )
        t3 = time.perf_counter()
        report = answer = report_check = answer_check = None
        if a.vlm is not None:
            loop = asyncio.get_running_loop()
            report_check = await loop.run_in_executor(
                state.vlm_executor, a.chat_checked, decoded.image, None, context
            )
            report = report_check.pop("text")
            if question and question.strip():
                answer_check = await loop.run_in_executor(
                    state.vlm_executor, a.chat_checked, decoded.image, question.strip(), context
                )
                answer = answer_check.pop("text")
        t4 = time.perf_counter()
        if settings.store_uploads is not None:
            await run_in_threadpool(_store, settings.store_uploads, rid, decoded)
        request.scope["state"]["log_extra"] = {"kind": decoded.kind, "batch_size": out.batch_size}
        # plain JSON of plain Python values: FastAPI's generic encoder walks the ~30 kB body item by
        # item (~5 ms/request measured); the schema above still documents it and tests validate it
        body = {
            "request_id": rid,
            "input": decoded.info,
            "preview": preview,
            **preds,
            "similar_cases": cases,
            "report": report,
            "report_check": report_check,
            "answer": answer,
            "answer_check": answer_check,
            "segmentation": seg,
            "model": {
                "name": state.model_info.get("name"),
                "backend": a.backend,
                "hash": str(state.model_info.get("hash", ""))[:12],
            },
            "batch_size": out.batch_size,
            "timing_ms": {
                "decode": round((t1 - t0) * 1000, 2),
                "model": round(out.forward_ms, 2),
                "queue_and_model": round((t2 - t1) * 1000, 2),
                "postprocess": round((t3 - t2) * 1000, 2),
                "vlm": round((t4 - t3) * 1000, 2),
                "total": round((time.perf_counter() - t0) * 1000, 2),
            },
        }
        return JSONResponse(body)

    return routes


def _decode(
    state: ServeState, data: bytes, name: str, content_type: str, k: int
) -> tuple[DecodedUpload, Any]:
    # a fresh de-identifier per request (same per-process key), so its audit list never grows
    decoded = decode_upload(data, name, content_type, deid=type(state.deid)(state.deid.key))
    return decoded, state.analyzer.make_job(decoded.image, k)


def upload_name(filename: str | None) -> str:
    """The neutral name an upload goes by in messages and logs: 'upload' or 'upload.dcm'."""
    return "upload.dcm" if (filename or "").lower().endswith((".dcm", ".dicom")) else "upload"


def _store(root: Path, rid: str, decoded: DecodedUpload) -> Path:
    """Keep the de-identified image (PNG) and its non-identifying facts (JSON), written atomically.

    Files are named by a server-generated id, never by the client's request id, and an existing
    file is never replaced: two requests with the same X-Request-ID keep both uploads.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    while True:
        stem = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:16]}"
        try:  # claim the name first (O_EXCL): no other request can ever write the same files
            fd = os.open(root / f"{stem}.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        os.close(fd)
        break
    write_png(root / f"{stem}.png", decoded.image)
    atomic_write_text(
        root / f"{stem}.json", json.dumps({"request_id": rid, "stored_as": stem, **decoded.info}, default=str)
    )
    return root / f"{stem}.png"


def study_context(vlm: Any, measurements: str | None, sex: str | None) -> dict[str, Any] | None:
    """The form's measurements (JSON) and sex as a VLM study context; None when neither is given.

    Raises UserError naming the field when the JSON is malformed, names unknown measurements, or
    the served VLM cannot draft from them (it would ignore them silently).
    """
    from sonofm.models.vlm_context import clean_context, measurements_from_json  # lazy: models import torch

    if not (measurements and measurements.strip()) and not (sex and sex.strip()):
        return None
    if vlm is None or not hasattr(vlm, "answer_batch"):
        raise UserError(
            "fields 'measurements'/'sex': the served VLM cannot draft from measurements"
            if vlm is not None
            else "fields 'measurements'/'sex': no VLM is served (start with --vlm)"
        )
    values: Any = {}
    if measurements and measurements.strip():
        values = measurements_from_json(measurements, "field 'measurements'")
    return clean_context({"measurements": values, "sex": sex}, "fields 'measurements'/'sex'")
