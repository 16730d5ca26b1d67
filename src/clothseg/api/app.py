"""The HTTP API: FastAPI app wiring accounts, tasks, storage and the engine."""

from __future__ import annotations

import base64
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clothseg import __version__
from clothseg import observability as obs
from clothseg.accounts import Accounts, InsufficientCredits, KeyInfo, TokenBucketLimiter
from clothseg.api.envelope import ApiError, envelope
from clothseg.api.form import CHOICES, parse_create_form
from clothseg.config import MB, Settings
from clothseg.database import open_database
from clothseg.engine import load_engine
from clothseg.storage import LinkSigner, LocalResultStore, StorageError
from clothseg.tasks import ZIP_NAME, Job, QueueFull, TaskService, TaskState, ThreadPoolDispatcher
from clothseg.tasks.models import TaskRecord

log = logging.getLogger("clothseg.api")

TASKS_PATH = "/api/tasks/visual/clothing-segmentation"
WEB_DIR = Path(__file__).resolve().parent.parent / "web"
# Multipart framing and the small fields on top of the 20 MB image.
FORM_OVERHEAD = 1 * MB


class BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Stops reading a request body as soon as it passes ``limit`` bytes, so an
    oversized upload is refused while streaming, not after buffering it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge()
            return message

        await self.app(scope, limited, send)


def load_secret(data_dir: Path) -> bytes:
    """The link-signing secret, made once per data directory."""
    path = data_dir / "secret.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_bytes(secrets.token_bytes(32))
        path.chmod(0o600)
    return path.read_bytes()


def _ts(value: float | None) -> str | None:
    return None if value is None else str(int(value))


def create_app(settings: Settings | None = None) -> FastAPI:
    cfg = settings or Settings()
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    sessions = open_database(cfg.database_url)
    accounts = Accounts(sessions)
    limiter = TokenBucketLimiter()
    store = LocalResultStore(cfg.results_dir)
    signer = LinkSigner(load_secret(cfg.data_dir), cfg.result_ttl_seconds)
    dispatcher = ThreadPoolDispatcher(cfg.workers)
    tasks = TaskService(sessions, store, accounts, cfg, dispatcher,
                        lambda: load_engine(cfg.model_path or None, cfg.engine_threads))
    stop = threading.Event()

    def sweeper() -> None:
        while not stop.wait(cfg.sweep_interval_seconds):
            try:
                if removed := tasks.sweep():
                    log.info("swept expired tasks", extra={"count": removed})
            except Exception:
                log.exception("sweep failed")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        tasks.engine()  # load the model before answering, not on the first task
        tasks.recover()
        dispatcher.start(tasks.run)
        thread = threading.Thread(target=sweeper, name="clothseg-sweeper", daemon=True)
        thread.start()
        log.info("clothseg ready", extra={"data_dir": str(cfg.data_dir), "workers": cfg.workers})
        yield
        stop.set()
        dispatcher.stop()

    app = FastAPI(
        title="clothseg", version=__version__, lifespan=lifespan,
        description="Self-hosted clothing and portrait segmentation, wire-compatible with the "
                    "documented Clothing Segmentation API. See docs/API.md.",
    )
    app.add_middleware(BodyLimitMiddleware, limit=cfg.max_upload_bytes + FORM_OVERHEAD)

    # -- errors: always the envelope, never a stack trace ------------------------
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> Response:
        return envelope(exc.status, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        message = {404: "not found", 405: "method not allowed"}.get(exc.status_code, str(exc.detail))
        return envelope(exc.status_code, message)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return envelope(400, f"{field}: {first.get('msg', 'invalid value')}")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        return envelope(500, "internal server error")

    @app.middleware("http")
    async def _count_requests(request: Request, call_next):  # type: ignore[no-untyped-def]
        response = await call_next(request)
        route = next((r.path for r in app.router.routes
                      if r.matches(request.scope)[0] == Match.FULL), "unmatched")
        obs.REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        return response

    # -- helpers -------------------------------------------------------------------
    def authenticate(request: Request) -> KeyInfo:
        key = request.headers.get("x-api-key")
        if not key:
            raise ApiError(401, "missing X-API-KEY header")
        info = accounts.authenticate(key)
        if info is None:
            raise ApiError(401, "invalid or revoked API key")
        return info

    def task_data(request: Request, row: TaskRecord) -> dict[str, Any]:
        data: dict[str, Any] = {
            "task_id": row.id,
            "state": row.state,
            "progress": row.progress,
            "output_type": row.output_type,
            "created_at": _ts(row.created_at),
            "processed_at": _ts(row.processed_at),
            "completed_at": _ts(row.completed_at),
        }
        if row.state != TaskState.SUCCEEDED:
            return {k: v for k, v in data.items() if v is not None}
        base = (cfg.public_url or str(request.base_url)).rstrip("/")
        expires = int((row.completed_at or time.time()) + cfg.result_ttl_seconds)

        def link(name: str) -> str:
            key = f"{row.id}/{name}"
            return f"{base}/results/{key}?{signer.sign(key, expires)}"

        def inline(name: str) -> str:
            return base64.b64encode(tasks.read_result(row.id, name)).decode()

        present = inline if row.return_base64 else link
        if row.class_names:
            data["class_masks"] = {n: present(f"{n}.png") for n in row.class_names.split(",")}
        if row.has_zip:
            data["clothes_masks"] = present(ZIP_NAME)
        return data

    def task_response(request: Request, row: TaskRecord) -> Response:
        message = "success" if row.state >= 0 else row.message
        return envelope(200, message, task_data(request, row))

    # -- routes ----------------------------------------------------------------------
    form_schema = {
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": {
                "type": "object",
                "properties": {
                    "image_file": {"type": "string", "format": "binary",
                                   "description": "Image upload (max 20 MB). Use this or image_url."},
                    "image_url": {"type": "string", "description": "http(s) URL of the image (max 30 MB)."},
                    **{f: {"type": "integer", "enum": list(allowed), "default": default}
                       for f, (allowed, default) in CHOICES.items()},
                },
            }}},
        },
    }

    @app.post(TASKS_PATH, openapi_extra=form_schema, summary="Create a clothing segmentation task",
              responses=_responses(200, 400, 401, 402, 413, 429, 500))
    async def create_task(request: Request) -> Response:
        key = authenticate(request)
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > cfg.max_upload_bytes + FORM_OVERHEAD:
            raise ApiError(413, _too_large(cfg))
        if not limiter.allow(key.id, key.qps):
            raise ApiError(429, f"request frequency exceeds the QPS limit of {key.qps:g} for this key")
        try:
            form = await request.form(max_files=2, max_fields=32)
        except BodyTooLarge:
            raise ApiError(413, _too_large(cfg)) from None
        except ClientDisconnect:
            raise ApiError(400, "the client closed the connection while uploading") from None
        except Exception as exc:  # malformed multipart
            raise ApiError(400, f"the body must be multipart/form-data: {exc}") from None
        upload, url, options, sync, return_base64 = parse_create_form(form)
        image = None
        if upload is not None:
            if (upload.size or 0) > cfg.max_upload_bytes:
                raise ApiError(413, _too_large(cfg))
            image = await upload.read()
            if not image:
                raise ApiError(400, "image_file is empty")
        job = Job(image=image, image_url=url, options=options, return_base64=return_base64)
        try:
            task_id = await run_in_threadpool(tasks.create, key, job)
        except InsufficientCredits as exc:
            raise ApiError(402, str(exc)) from None
        except QueueFull as exc:
            raise ApiError(429, str(exc)) from None
        except StorageError as exc:
            log.error("cannot store an upload", extra={"error": str(exc)})
            raise ApiError(500, "the server could not store the upload; retry later") from None
        if not sync:
            return envelope(200, "success", {"task_id": task_id})
        row = await run_in_threadpool(tasks.wait, key.id, task_id, cfg.task_timeout_seconds + 30)
        assert row is not None
        return task_response(request, row)

    @app.get(TASKS_PATH + "/{task_id}", summary="Query a clothing segmentation task",
             responses=_responses(200, 401, 404, 500))
    async def get_task(task_id: str, request: Request) -> Response:
        key = authenticate(request)
        row = await run_in_threadpool(tasks.get, key.id, task_id)
        if row is None:
            raise ApiError(404, "task not found")
        return task_response(request, row)

    @app.get("/results/{task_id}/{name}", summary="Download a result (signed link)",
             responses={200: {"description": "The PNG mask or the ZIP",
                              "content": {"image/png": {}, "application/zip": {}}}, **_responses(404)})
    async def get_result(task_id: str, name: str, expires: int = 0, sig: str = "") -> Response:
        key = f"{task_id}/{name}"
        if not signer.verify(key, expires, sig):
            expired = expires and time.time() > expires
            raise ApiError(404, "this result link has expired" if expired else "invalid result link")
        try:
            data = await run_in_threadpool(tasks.read_result, task_id, name)
        except KeyError:
            raise ApiError(404, "result not found") from None
        media = "application/zip" if name.endswith(".zip") else "image/png"
        return Response(data, media_type=media, headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/", include_in_schema=False)
    async def web_page() -> Response:
        return FileResponse(WEB_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")

    @app.get("/healthz", summary="Liveness and queue depth")
    async def healthz() -> Response:
        depth = await run_in_threadpool(tasks.queue_depth)
        return envelope(200, "ok", {"version": __version__, "queue_depth": depth})

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        obs.QUEUE_DEPTH.set(await run_in_threadpool(tasks.queue_depth))
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


STATUS_MEANINGS = {
    200: "Success. For a task, look at data.state: 1 done, >1 running, <0 failed (message says why).",
    400: "A parameter is missing or invalid; the message names the field.",
    401: "Missing, unknown or revoked X-API-KEY.",
    402: "The key has fewer than 3 available credits.",
    404: "No such task for this key, or the result link is invalid or expired.",
    413: "The upload exceeds 20 MB.",
    429: "The key's QPS limit is exceeded, or the task queue is full.",
    500: "Unexpected server error.",
}
ENVELOPE_SCHEMA = {
    "type": "object",
    "required": ["status", "message"],
    "properties": {"status": {"type": "integer"}, "message": {"type": "string"}, "data": {"type": "object"}},
}


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI descriptions of the envelope answers a route gives."""
    return {code: {"description": STATUS_MEANINGS[code],
                   "content": {"application/json": {"schema": ENVELOPE_SCHEMA}}} for code in codes}


def _too_large(cfg: Settings) -> str:
    return f"the uploaded file exceeds {cfg.max_upload_bytes // MB} MB"
