"""The HTTP API: FastAPI app wiring accounts, tasks, storage and the engine."""

from __future__ import annotations

import base64
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clothseg import __version__
from clothseg import observability as obs
from clothseg.accounts import TASK_COST, InsufficientCredits, KeyInfo, LimiterUnavailable
from clothseg.api import schema
from clothseg.api.envelope import ApiError, envelope
from clothseg.api.form import parse_create_form, parse_idempotency_key
from clothseg.config import MB, Settings
from clothseg.storage import StorageError
from clothseg.tasks import ZIP_NAME, IdempotencyConflict, Job, QueueFull, TaskState
from clothseg.tasks.dispatch import QueueUnavailable
from clothseg.tasks.models import TaskRecord
from clothseg.wiring import build_services

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


def _ts(value: float | None) -> str | None:
    return None if value is None else str(int(value))


def create_app(settings: Settings | None = None) -> FastAPI:
    cfg = settings or Settings()
    parts = build_services(cfg)
    accounts, limiter, store, signer = parts.accounts, parts.limiter, parts.store, parts.signer
    dispatcher, downloads, notifier, tasks = parts.dispatcher, parts.downloads, parts.notifier, parts.tasks
    stop = threading.Event()

    def housekeeping() -> None:
        """Every node: delete expired results, recover tasks whose holder is gone."""
        while not stop.wait(cfg.sweep_interval_seconds):
            try:
                if removed := tasks.sweep():
                    log.info("swept expired tasks", extra={"count": removed})
                tasks.recover()
            except Exception:
                log.exception("housekeeping failed")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if not cfg.distributed:
            tasks.engine()  # load the model before answering, not on the first task
        notifier.start()
        tasks.start()
        downloads.start(tasks.download)
        # Embedded: this process held every task and its queue is gone.  Scale-out:
        # only tasks whose lease ran out; the broker still holds the queue.
        tasks.recover(at_start=not cfg.distributed)
        dispatcher.start(tasks.run)
        thread = threading.Thread(target=housekeeping, name="clothseg-housekeeping", daemon=True)
        thread.start()
        log.info("clothseg ready", extra={"data_dir": str(cfg.data_dir), "workers": cfg.workers})
        yield
        stop.set()
        downloads.stop()
        dispatcher.stop()
        tasks.stop()
        notifier.stop()

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
        return envelope(exc.status_code, message, headers=exc.headers)  # 405 carries Allow

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return envelope(400, f"{field}: {first.get('msg', 'invalid value')}")

    @app.exception_handler(DBAPIError)
    async def _database_down(_: Request, exc: DBAPIError) -> Response:
        # Handled here, not as an unexpected error, so the connection stays usable.
        log.error("database unreachable", extra={"error": str(exc.orig)})
        return envelope(500, "the server cannot reach its database right now; retry later")

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
        expires = tasks.expires_at(row)
        if row.state != TaskState.SUCCEEDED or expires is None:
            return {k: v for k, v in data.items() if v is not None}
        base = (cfg.public_url or str(request.base_url)).rstrip("/")

        def link(name: str) -> str:
            key = f"{row.id}/{name}"
            # An object store hands out its own presigned link; the local disk is served by us.
            return store.link(key, expires) or f"{base}/results/{key}?{signer.sign(key, expires)}"

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

    async def start_task(key: KeyInfo, form: FormData, idempotency_key: str | None) -> tuple[str, bool]:
        """(task id, sync) for a create form, or ApiError."""
        upload, url, options, sync, return_base64 = parse_create_form(form)
        if upload is not None:
            if (upload.size or 0) > cfg.max_upload_bytes:
                raise ApiError(413, _too_large(cfg))
            if not upload.size:
                raise ApiError(400, "image_file is empty")
        # The upload stays in its spooled file: it is copied to storage, never read whole into memory.
        job = Job(image=upload.file if upload else None, image_url=url, options=options,
                  return_base64=return_base64)
        try:
            return await run_in_threadpool(tasks.create, key, job, idempotency_key), sync
        except InsufficientCredits as exc:
            raise ApiError(402, str(exc)) from None
        except QueueFull as exc:
            raise ApiError(429, str(exc)) from None
        except IdempotencyConflict as exc:
            raise ApiError(409, str(exc)) from None
        except StorageError as exc:
            log.error("cannot store an upload", extra={"error": str(exc)})
            raise ApiError(500, "the server could not store the upload; retry later") from None
        except QueueUnavailable as exc:
            log.error("task queue unavailable", extra={"error": str(exc)})
            raise ApiError(500, "the server cannot queue tasks right now (its broker is unreachable); "
                                "retry later") from None

    # -- routes ----------------------------------------------------------------------
    @app.post(TASKS_PATH, summary="Create a clothing segmentation task", openapi_extra=schema.CREATE_OPERATION,
              responses=schema.CREATE_RESPONSES)
    async def create_task(request: Request) -> Response:
        key = authenticate(request)
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > cfg.max_upload_bytes + FORM_OVERHEAD:
            raise ApiError(413, _too_large(cfg))
        if len(request.headers.getlist("idempotency-key")) > 1:
            raise ApiError(400, "Idempotency-Key was sent more than once")
        idempotency_key = parse_idempotency_key(request.headers.get("idempotency-key"))
        try:
            allowed = await run_in_threadpool(limiter.allow, key.id, key.qps)
        except LimiterUnavailable as exc:
            log.error("QPS limiter unavailable", extra={"error": str(exc)})
            raise ApiError(500, "the server cannot check the QPS limit right now (Redis is unreachable); "
                                "retry later") from None
        if not allowed:
            raise ApiError(429, f"request frequency exceeds the QPS limit of {key.qps:g} for this key")
        try:
            form = await request.form(max_files=2, max_fields=32)
        except BodyTooLarge:
            raise ApiError(413, _too_large(cfg)) from None
        except ClientDisconnect:
            raise ApiError(400, "the client closed the connection while uploading") from None
        except Exception as exc:  # malformed multipart
            raise ApiError(400, f"the body must be multipart/form-data: {exc}") from None
        try:
            task_id, sync = await start_task(key, form, idempotency_key)
        finally:
            await form.close()  # the spooled upload file
        if not sync:
            return envelope(200, "success", {"task_id": task_id})
        row = await run_in_threadpool(tasks.wait, key.id, task_id, cfg.task_timeout_seconds + 30)
        if row is None:  # finished and expired already (a result lifetime shorter than the wait)
            raise ApiError(404, "task not found")
        return task_response(request, row)

    @app.get(TASKS_PATH + "/{task_id}", summary="Query a clothing segmentation task",
             openapi_extra={"security": schema.SECURITY}, responses=schema.TASK_RESPONSES)
    async def get_task(task_id: str, request: Request) -> Response:
        key = authenticate(request)
        row = await run_in_threadpool(tasks.get, key.id, task_id)
        if row is None:
            raise ApiError(404, "task not found")
        return task_response(request, row)

    @app.get("/api/account", summary="The calling key's credits and QPS limit (extension)",
             openapi_extra={"security": schema.SECURITY}, responses=schema.ACCOUNT_RESPONSES)
    async def get_account(request: Request) -> Response:
        key = authenticate(request)
        return envelope(200, "success", {
            "credits": key.credits, "held": key.reserved, "available": key.credits - key.reserved,
            "task_cost": TASK_COST, "qps": key.qps,
        })

    @app.get("/results/{task_id}/{name}", summary="Download a result (signed link)",
             responses=schema.RESULT_RESPONSES)
    async def get_result(task_id: str, name: str,
                         expires: Annotated[str, Query(description="Unix seconds, as signed")] = "",
                         sig: Annotated[str, Query(description="The link's HMAC-SHA256")] = "") -> Response:
        key = f"{task_id}/{name}"
        until = int(expires) if expires.isdigit() and expires.isascii() else None
        if until is None or not signer.verify(key, until, sig):
            expired = until is not None and time.time() > until
            raise ApiError(404, "this result link has expired" if expired else "invalid result link")
        try:
            data = await run_in_threadpool(tasks.read_result, task_id, name)
        except KeyError:
            raise ApiError(404, "result not found") from None
        media = "application/zip" if name.endswith(".zip") else "image/png"
        # Caches keep the file no longer than the link works.
        max_age = max(0, until - int(time.time()))
        return Response(data, media_type=media, headers={"Cache-Control": f"private, max-age={max_age}"})

    @app.get("/", include_in_schema=False)
    async def web_page() -> Response:
        return FileResponse(WEB_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")

    probe_key = f"healthz/{uuid.uuid4().hex}"  # this node's own, so nodes sharing a store never collide

    def components() -> tuple[dict[str, str], int, int]:
        """Each shared component's reachability ("ok" or what failed), the queue depth
        and the number of live workers."""
        checks, depth, workers = {}, 0, cfg.workers
        try:
            depth = tasks.queue_depth()
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unreachable: {type(exc).__name__}"
        try:
            limiter.check()
            checks["qps_limiter"] = "ok"
        except LimiterUnavailable as exc:
            checks["qps_limiter"] = str(exc)
        try:
            store.put(probe_key, b"ok")
            store.delete_prefix(probe_key)
            checks["storage"] = "ok"
        except (StorageError, OSError) as exc:
            checks["storage"] = f"cannot write: {exc}"
        try:
            dispatcher.check()
            checks["queue"] = "ok"
        except QueueUnavailable as exc:
            checks["queue"] = str(exc)
        if parts.roster is not None:
            alive = parts.roster.alive()
            workers = alive or 0
            checks["workers"] = ("unknown (Redis is unreachable)" if alive is None else "ok" if alive else
                                 f"none alive (no `clothseg worker` reported in the last {cfg.lease_seconds:g} s)")
        return checks, depth, workers

    @app.get("/healthz", summary="Liveness, shared components' reachability and queue depth",
             responses=schema.HEALTH_RESPONSES)
    async def healthz() -> Response:
        checks, depth, workers = await run_in_threadpool(components)
        failing = [f"{name}: {state}" for name, state in checks.items() if state != "ok"]
        if failing:
            return envelope(500, "unhealthy: " + "; ".join(failing))
        return envelope(200, "ok", {"version": __version__, "queue_depth": depth, "workers": workers,
                                    "components": checks})

    @app.get("/metrics", summary="Prometheus metrics", responses=schema.METRICS_RESPONSES)
    async def metrics() -> Response:
        obs.QUEUE_DEPTH.set(await run_in_threadpool(tasks.queue_depth))
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = schema.finish(get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _too_large(cfg: Settings) -> str:
    return f"the uploaded file exceeds {cfg.max_upload_bytes // MB} MB"
