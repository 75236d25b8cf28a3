"""The HTTP edge of `sonofm serve`: request ids, bearer auth, body limits, JSON errors and JSON logs.

Bearer-token auth is checked in an ASGI middleware before any request body is read, so an
unauthenticated client cannot make the server parse uploads. Every request gets a request id
(`X-Request-ID`, echoed or generated) and one JSON access-log line.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
import uuid
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sonofm.serve.settings import ServeSettings

log = logging.getLogger("sonofm.serve.app")  # the service's log lines keep one logger name
access_log = logging.getLogger("sonofm.serve.access")

OPEN_PATHS = ("/health", "/ready", "/api/info")
# a client's X-Request-ID is echoed only when it is a plain token: it starts with a letter or
# digit and holds no "..", so it can never name a path (anything else gets a generated id)
_REQUEST_ID = re.compile(r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# documents the bearer scheme in OpenAPI (routes list it in `dependencies`); the check itself runs
# in RequestContextMiddleware, before the body is read
BEARER_AUTH = Depends(HTTPBearer(auto_error=False, description="Required when the server runs with --token."))


def json_error(
    status: int, message: str, request_id: str | None = None, headers: dict | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"detail": message}
    if request_id:
        body["request_id"] = request_id
    return JSONResponse(body, status_code=status, headers=headers)


def request_id(request: Request) -> str | None:
    """The id RequestContextMiddleware gave this request."""
    return request.scope.get("state", {}).get("request_id")


def add_error_handlers(app: FastAPI, settings: ServeSettings) -> None:
    """HTTP and validation errors as one-line JSON (`detail`, `request_id`), like every other error."""

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        msg = str(exc.detail)
        if exc.status_code == 413:
            msg = f"upload too large: the limit is {settings.max_upload_mb:g} MB"
        return json_error(exc.status_code, msg, request_id(request), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors():
            loc = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path"))
            parts.append(f"field {loc!r}: {e.get('msg')}")
        return json_error(422, "; ".join(parts) or "invalid request", request_id(request))


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
                resp = json_error(401, why, rid, {"WWW-Authenticate": 'Bearer realm="sonofm"'})
                await resp(scope, receive, send_with_id)
            elif big:
                await json_error(413, big, rid, {"Connection": "close"})(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        except Exception:
            # details stay in the server log (they may name paths); the client gets the request id
            log.exception("request %s failed", rid)
            if status.get("started"):
                raise
            status["code"] = 500
            msg = "internal server error; the server log has the details"
            await json_error(500, msg, rid)(scope, receive, send_with_id)
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
