"""The `sonofm serve` web service: FastAPI app, JSON API, static page.

Routes (OpenAPI docs at /docs, schema at /openapi.json):

- `GET /health`   liveness: the process answers (always open, no auth)
- `GET /ready`    readiness: models loaded, text bank cached, batcher running (503 otherwise)
- `GET /`         the web page (static files under /static; no external URLs)
- `GET /api/info` what this server can do (features, limits, whether a token is needed); open
- `POST /api/analyze`  multipart `file` (PNG/JPEG/DICOM) + optional `question`, `k`
- `GET /api/thumb/{case_id}`  a similar case's JPEG thumbnail

Models are loaded once in `load_state`; image forwards of concurrent requests are grouped by a
`MicroBatcher` and run in one worker thread; the optional VLM runs in its own single thread.
Bearer-token auth is checked in an ASGI middleware before any request body is read, so an
unauthenticated client cannot make the server parse uploads. Every request gets a request id
(`X-Request-ID`, echoed or generated) and one JSON access-log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sonofm import __version__
from sonofm import taxonomy as tx
from sonofm.errors import UserError
from sonofm.serve.analyze import Analyzer, DecodedUpload, UploadError, decode_upload, new_deidentifier
from sonofm.serve.batching import MicroBatcher
from sonofm.serve.settings import ServeSettings

log = logging.getLogger(__name__)
access_log = logging.getLogger("sonofm.serve.access")

STATIC_DIR = Path(__file__).parent / "static"
MULTIPART_SLACK = 64 * 1024  # multipart boundaries + the small form fields on top of the file
OPEN_PATHS = ("/health", "/ready", "/api/info")
# a client's X-Request-ID is echoed only when it is a plain token: it starts with a letter or
# digit and holds no "..", so it can never name a path (anything else gets a generated id)
_REQUEST_ID = re.compile(r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# the page loads only its own files and inline data: URIs (thumbnails, overlays)
PAGE_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


# ---------------------------------------------------------------- loading
@dataclass
class ServeState:
    """Everything loaded once per process."""

    settings: ServeSettings
    analyzer: Analyzer
    batcher: MicroBatcher
    vlm_executor: ThreadPoolExecutor
    deid: Any
    model_info: dict[str, Any] = field(default_factory=dict)
    load_s: float = 0.0
    thumbs: dict[str, Path] = field(default_factory=dict)

    def close(self) -> None:
        self.batcher.close()
        self.vlm_executor.shutdown(wait=False, cancel_futures=True)


def _load_encoder(settings: ServeSettings) -> tuple[Any, str, dict[str, Any]]:
    """(encoder, backend, info): torch model dir, ONNX export dir, or a model dir exported on the fly."""
    from sonofm.serve.index import is_onnx_export, load_encoder

    src = settings.model
    if settings.onnx and not is_onnx_export(src):
        from sonofm.serve.export import export_onnx

        # export to a temp dir and load from it: onnxruntime sessions and the tokenizer are in
        # memory afterwards, so nothing is left on disk (`sonofm export onnx` keeps an export)
        with tempfile.TemporaryDirectory(prefix="sonofm-onnx-") as tmp:
            log.info("exporting %s to ONNX for onnxruntime serving", src)
            export_onnx(src, Path(tmp) / "export")
            encoder, mhash = load_encoder(Path(tmp) / "export", device=settings.device)
        backend = "onnxruntime"
    else:
        encoder, mhash = load_encoder(src, device=settings.device)
        backend = "onnxruntime" if is_onnx_export(src) else "torch"
    if not callable(getattr(encoder, "encode_text", None)):
        raise UserError(
            f"{settings.model}: {type(encoder).__name__} has no text encoder; serving needs a dual encoder"
        )
    info = {
        "model_type": getattr(encoder, "model_type", None),
        "name": getattr(encoder.config, "name", None),
        "hash": mhash,
        "embed_dim": int(encoder.config.embed_dim),
        "image_size": int(encoder.config.image.image_size),
        "backend": backend,
    }
    return encoder, backend, info


def _load_optional(path: str | None, what: str, needs: tuple[str, ...], device: Any) -> Any:
    if path is None:
        return None
    from sonofm import load_model

    model = load_model(path)
    if device is not None and hasattr(model, "to"):
        model = model.to(device)
    missing = [a for a in needs if getattr(model, a, None) is None]
    if missing:
        raise UserError(
            f"{path}: a {type(model).__name__} is not a {what} model (it has no {', '.join(missing)})"
        )
    return model


def load_state(settings: ServeSettings) -> ServeState:
    """Load encoder (+ index, VLM, segmentation model), cache the text bank, build the batcher."""
    import torch

    from sonofm.eval.embed import pick_device

    t0 = time.perf_counter()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)  # one process per host: the whole process's pool
    encoder, backend, info = _load_encoder(settings)
    device = pick_device(settings.device) if backend == "torch" else torch.device("cpu")
    index, thumbs = None, {}
    if settings.index is not None:
        from sonofm.serve.index import CaseIndex

        index = CaseIndex.load(settings.index)
        index.check_model(encoder)
        if index.info.get("model_hash") and index.info.get("model_hash") != info["hash"]:
            log.warning(
                "index %s was built with model %s (hash %.12s), serving %s (hash %.12s): similar cases "
                "are ranked in a space the served model may not share",
                settings.index,
                index.info.get("model_dir"),
                index.info.get("model_hash"),
                settings.model,
                info["hash"],
            )
        thumbs = {
            str(i): index.path / str(t) for i, t in zip(index.meta["id"], index.meta["thumb"], strict=True)
        }
    vlm = _load_optional(settings.vlm, "generative VLM", ("chat",), device)
    seg = _load_optional(settings.seg, "segmentation", ("visual",), device)
    seg_cfg = getattr(seg, "config", None)
    if seg is not None and getattr(seg_cfg, "task", "segment") != "segment":
        raise UserError(f"--seg {settings.seg}: a {seg_cfg.task!r} task model; expected a 'segment' one")
    if seg is not None and int(getattr(seg, "input_frames", 1)) != 1:
        raise UserError(f"--seg {settings.seg}: takes {seg.input_frames} frames; serving needs 1-image input")
    analyzer = Analyzer(
        encoder,
        index=index,
        vlm=vlm,
        seg=seg,
        device=device,
        backend=backend,
        thumbnails_inline=settings.thumbnails_inline,
    )
    batcher = MicroBatcher(
        analyzer.forward, max_batch=settings.batch_max, max_wait_ms=settings.batch_wait_ms, name="encoder"
    )
    log.info(
        "loaded model %s (%s), index %s, vlm %s, seg %s",
        settings.model, backend, settings.index, settings.vlm, settings.seg,
    )  # fmt: skip
    # what /ready shows (it is open even with a token): no filesystem paths
    info["index"] = None if index is None else {"count": len(index), "kind": index.kind}
    info["vlm"] = vlm is not None
    info["segmentation"] = seg is not None
    return ServeState(
        settings=settings,
        analyzer=analyzer,
        batcher=batcher,
        vlm_executor=ThreadPoolExecutor(max_workers=1, thread_name_prefix="sonofm-vlm"),
        deid=new_deidentifier(),
        model_info=info,
        load_s=time.perf_counter() - t0,
        thumbs=thumbs,
    )


# ---------------------------------------------------------------- middleware
def _json_error(
    status: int, message: str, request_id: str | None = None, headers: dict | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"detail": message}
    if request_id:
        body["request_id"] = request_id
    return JSONResponse(body, status_code=status, headers=headers)


class RequestContextMiddleware:
    """Request id, bearer-token check (before the body is read) and one JSON access-log line."""

    def __init__(
        self, app: ASGIApp, token: str | None, body_limits: dict[str, tuple[int, str]] | None = None
    ) -> None:
        self.app = app
        self.token = token
        # path -> (max body bytes, message): a declared Content-Length above it is refused with JSON
        # before anything is read (bodies without a length are cut by the route's max_body_size)
        self.body_limits = body_limits or {}

    def _too_large(self, scope: Scope) -> str | None:
        lim = self.body_limits.get(scope.get("path", ""))
        if lim is None:
            return None
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    return lim[1] if int(v) > lim[0] else None
                except ValueError:
                    return None
        return None

    def _authorised(self, scope: Scope) -> tuple[bool, str]:
        if self.token is None:
            return True, ""
        path = scope.get("path", "")
        if not path.startswith("/api/") or path in OPEN_PATHS:
            return True, ""
        auth = ""
        for k, v in scope.get("headers", []):
            if k == b"authorization":
                auth = v.decode("latin-1")
                break
        scheme, _, cred = auth.partition(" ")
        if scheme.lower() != "bearer" or not cred.strip():
            return False, "missing bearer token: send 'Authorization: Bearer <token>'"
        if not secrets.compare_digest(cred.strip().encode(), self.token.encode()):
            return False, "invalid bearer token"
        return True, ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        rid = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"x-request-id"), "")
        rid = rid if _REQUEST_ID.match(rid) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        status: dict[str, Any] = {"code": 500, "started": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            ok, why = self._authorised(scope)
            big = self._too_large(scope) if ok else None
            if not ok:
                resp = _json_error(401, why, rid, {"WWW-Authenticate": 'Bearer realm="sonofm"'})
                await resp(scope, receive, send_with_id)
            elif big:
                await _json_error(413, big, rid, {"Connection": "close"})(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        except Exception:
            # details stay in the server log (they may name paths); the client gets the request id
            log.exception("request %s failed", rid)
            if status.get("started"):
                raise
            status["code"] = 500
            msg = "internal server error; the server log has the details"
            await _json_error(500, msg, rid)(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            payload = {
                "event": "request",
                "request_id": rid,
                "method": scope.get("method"),
                "route": getattr(route, "path", None) or scope.get("path"),
                "path": scope.get("path"),
                "status": status["code"],
                "latency_ms": round((time.perf_counter() - t0) * 1000.0, 2),
                "client": (scope.get("client") or [None])[0],
            }
            extra = scope.get("state", {}).get("log_extra")
            if extra:
                payload.update(extra)
            access_log.info(json.dumps(payload), extra={"sonofm": payload})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: access lines keep their fields, other records get message/logger."""

    def format(self, record: logging.LogRecord) -> str:
        base = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname}
        payload = getattr(record, "sonofm", None)
        if isinstance(payload, dict):
            base.update(payload)
        else:
            base.update(logger=record.name, message=record.getMessage())
            if record.exc_info:
                base["exc"] = self.formatException(record.exc_info)
        return json.dumps(base, default=str)


def configure_json_logging(level: int = logging.INFO) -> None:
    """Send sonofm and uvicorn logs to stderr as JSON lines (used by `sonofm serve`)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    for name in ("sonofm", "uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers = [handler]
        lg.setLevel(level)
        lg.propagate = False


# ---------------------------------------------------------------- response models
class Score(BaseModel):
    tag: str
    label: str
    probability: float


class TopScore(Score):
    scores: list[Score]


class FindingOut(BaseModel):
    dimension: str = Field(description="'echo' or a descriptor dimension (shape, margin, ...)")
    tag: str
    label: str
    probability: float = Field(description="softmax over the positive vs negated prompt pair")


class CaseOut(BaseModel):
    id: str
    rank: int
    score: float = Field(description="cosine similarity of image embeddings")
    report: str
    region: str
    organ: str | None = None
    diagnosis: str | None = None
    view: str | None = None
    thumbnail: str | None = Field(None, description="JPEG data URI (when inline thumbnails are on)")
    thumbnail_url: str


class SegmentationOut(BaseModel):
    overlay: str = Field(description="PNG data URI: the label map blended over the image")
    area_fraction: dict[str, float]


class AnalyzeResponse(BaseModel):
    request_id: str
    input: dict[str, Any] = Field(description="kind, size, and for DICOM frames/de-identification facts")
    preview: str = Field(description="PNG data URI of the (de-identified) image the model saw")
    region: TopScore
    organ: TopScore
    attributes: dict[str, list[Score]] = Field(description="per dimension: softmax over its tags")
    findings: list[FindingOut]
    similar_cases: list[CaseOut] | None = Field(None, description="null when no index is loaded")
    report: str | None = Field(None, description="draft report; null when no VLM is loaded")
    report_check: dict[str, Any] | None = Field(
        None,
        description="the draft's confidence: mean_logprob, low_confidence (show a warning, not the "
        "text), reasons; null when no VLM is loaded",
    )
    answer: str | None = Field(None, description="VLM answer to `question`; null without VLM/question")
    segmentation: SegmentationOut | None = Field(
        None, description="null when no segmentation model is loaded"
    )
    model: dict[str, Any]
    batch_size: int = Field(description="images in the model forward this request ran in")
    timing_ms: dict[str, float]


# ---------------------------------------------------------------- the app
def _mount_offline_docs(app: FastAPI) -> None:
    """`/docs` with Swagger UI 5 assets from the `fastapi-offline` package, so the API docs work
    without internet (hospital networks are often closed; FastAPI's default page loads a CDN).
    Without that package `/docs` is absent and `/openapi.json` still describes the API."""
    try:
        import fastapi_offline
    except ImportError:
        log.warning("fastapi-offline is not installed: /docs is off (the schema is at /openapi.json)")
        return
    from fastapi.openapi.docs import get_swagger_ui_html

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


def create_app(settings: ServeSettings, *, state: ServeState | None = None) -> FastAPI:
    """The FastAPI app; models are loaded here (or passed in as `state`) so start-up errors surface early."""
    state = state or load_state(settings)
    limit = settings.max_upload_bytes
    # Starlette spools multipart files above 1 MB to a temporary file on disk: raise the spool size
    # to the upload limit so an (identified) DICOM never touches the disk before de-identification.
    from starlette.formparsers import MultiPartParser

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
        docs_url=None,  # served below from local Swagger UI assets: FastAPI's default loads a CDN
        redoc_url=None,
    )
    app.state.sonofm = state
    _mount_offline_docs(app)
    # documents the bearer scheme in OpenAPI; the check itself runs in RequestContextMiddleware,
    # before the body is read
    auth = [Depends(HTTPBearer(auto_error=False, description="Required when the server runs with --token."))]

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        msg = str(exc.detail)
        if exc.status_code == 413:
            msg = f"upload too large: the limit is {settings.max_upload_mb:g} MB"
        return _json_error(exc.status_code, msg, _rid(request), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors():
            loc = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path"))
            parts.append(f"field {loc!r}: {e.get('msg')}")
        return _json_error(422, "; ".join(parts) or "invalid request", _rid(request))

    @app.get("/health", tags=["service"], summary="Liveness")
    async def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/ready", tags=["service"], summary="Readiness: models loaded and batcher running")
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

    @app.get("/api/info", tags=["service"], summary="Features and limits of this server")
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

    @app.post(
        "/api/analyze",
        tags=["analysis"],
        summary="Analyze one ultrasound image",
        response_model=AnalyzeResponse,
        response_model_exclude_none=False,
        max_body_size=limit + MULTIPART_SLACK,
        dependencies=auth,
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
    ) -> Any:
        rid = request.state.request_id
        t0 = time.perf_counter()
        k = settings.default_k if k is None else k
        if k > settings.max_k:
            return _json_error(422, f"field 'k': must be <= {settings.max_k}, got {k}", rid)
        if region is not None and region not in tx.REGIONS:
            return _json_error(
                422, f"field 'region': must be one of {', '.join(tx.REGIONS)}, got {region!r}", rid
            )
        data = await file.read(limit + 1)
        if len(data) > limit:
            return _json_error(413, f"upload too large: the limit is {settings.max_upload_mb:g} MB", rid)
        # the client's file name is never echoed or logged (PACS exports are named after patients):
        # only whether it says DICOM, which sniffing needs for files without the DICM preamble
        name = upload_name(file.filename)
        try:
            decoded, job = await run_in_threadpool(_decode, state, data, name, file.content_type or "", k)
        except UploadError as e:
            request.scope["state"]["log_extra"] = {"error": e.message}
            return _json_error(e.status, e.message, rid)
        t1 = time.perf_counter()
        out = await state.batcher.submit(job)
        t2 = time.perf_counter()
        a = state.analyzer
        preds = a.predictions(out, region=region)
        cases, seg, preview = await run_in_threadpool(
            lambda: (a.similar_cases(out), a.segmentation(decoded.image, out), a.preview(decoded.image))
        )
        t3 = time.perf_counter()
        report = answer = report_check = None
        if a.vlm is not None:
            loop = asyncio.get_running_loop()
            report_check = await loop.run_in_executor(state.vlm_executor, a.chat_checked, decoded.image, None)
            report = report_check.pop("text")
            if question and question.strip():
                answer = await loop.run_in_executor(
                    state.vlm_executor, a.chat, decoded.image, question.strip()
                )
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

    @app.get(
        "/api/thumb/{case_id}",
        tags=["analysis"],
        summary="Thumbnail of an indexed case",
        response_class=FileResponse,
        dependencies=auth,
        responses={404: {"description": "no index, or no such case"}},
    )
    async def thumb(case_id: str) -> FileResponse:
        path = state.thumbs.get(case_id)  # only ids of the index: no path is built from user input
        if path is None or not path.is_file():
            raise HTTPException(404, f"no thumbnail for case {case_id!r}")
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(
            STATIC_DIR / "index.html",
            media_type="text/html",
            headers={"Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff"},
        )

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    # added first = inner: CORS (outermost) answers preflights, which carry no Authorization header
    too_large = f"upload too large: the limit is {settings.max_upload_mb:g} MB"
    app.add_middleware(
        RequestContextMiddleware,
        token=settings.token,
        body_limits={"/api/analyze": (limit + MULTIPART_SLACK, too_large)},
    )
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID"],
        )
    return app


def _rid(request: Request) -> str | None:
    return request.scope.get("state", {}).get("request_id")


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
    from sonofm.atomic import atomic_write_text
    from sonofm.data.pngio import write_png

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
