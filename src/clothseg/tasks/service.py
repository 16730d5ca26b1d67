"""Task lifecycle: create (validated job -> database -> queue), run (worker ->
engine -> masks -> storage), query, recover after a restart, and sweep.

The database is the source of truth for every task: the queue only carries
task ids, so a task can never be lost with the queue, and a restart re-queues
what was waiting and re-runs (or cancels, -13) what was interrupted.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import sessionmaker

from clothseg import observability as obs
from clothseg.accounts import Accounts, KeyInfo
from clothseg.config import Settings
from clothseg.engine.core import Engine, SegmentOptions
from clothseg.imaging import (
    DownloadFailed,
    DownloadTooLarge,
    ImageTooLarge,
    InvalidImage,
    decode_image,
    encode_results,
    fetch_url,
)
from clothseg.storage import ResultStore, StorageError
from clothseg.tasks.dispatch import Dispatcher
from clothseg.tasks.models import TaskRecord
from clothseg.tasks.states import RUNNING_STATES, TaskFailure, TaskState

log = logging.getLogger("clothseg.tasks")

ZIP_NAME = "clothes.zip"
NO_PERSON = "no person found in the image"


class QueueFull(Exception):
    pass


@dataclass(frozen=True)
class Job:
    """A validated request: exactly one of ``image`` / ``image_url``."""

    image: bytes | None
    image_url: str | None
    options: SegmentOptions
    return_base64: bool = False


def input_key(task_id: str) -> str:
    return f"inputs/{task_id}"


def result_key(task_id: str, name: str) -> str:
    return f"{task_id}/{name}"


class TaskService:
    def __init__(self, sessions: sessionmaker, store: ResultStore, accounts: Accounts,
                 settings: Settings, dispatcher: Dispatcher,
                 engine_factory: Callable[[], Engine]) -> None:
        self._sessions = sessions
        self._store = store
        self._accounts = accounts
        self._settings = settings
        self._dispatcher = dispatcher
        self._engine_factory = engine_factory
        self._engine: Engine | None = None

    # -- creation -----------------------------------------------------------
    def create(self, key: KeyInfo, job: Job) -> str:
        """Store the task and queue it.  Raises QueueFull or InsufficientCredits."""
        if self.queue_depth() >= self._settings.max_queue:
            raise QueueFull(f"the task queue is full ({self._settings.max_queue} waiting); retry later")
        self._accounts.reserve(key.id)
        task_id = str(uuid.uuid4())
        try:
            if job.image is not None:
                self._store.put(input_key(task_id), job.image)
            o = job.options
            with self._sessions.begin() as s:
                s.add(TaskRecord(
                    id=task_id, key_id=key.id, state=TaskState.QUEUED, progress=0,
                    image_url=job.image_url, class_type=o.class_type, output_type=o.output_type,
                    quality=o.quality, detail_mode=o.detail_mode, return_base64=job.return_base64,
                    created_at=time.time(),
                ))
        except Exception:
            with self._sessions.begin() as s:
                self._accounts.settle(s, key.id, succeeded=False)
            self._store.delete_prefix(input_key(task_id))
            raise
        self._dispatcher.submit(task_id)
        obs.QUEUE_DEPTH.set(self.queue_depth())
        log.info("task created", extra={"task_id": task_id, "key_id": key.id})
        return task_id

    def queue_depth(self) -> int:
        with self._sessions() as s:
            return s.scalar(select(func.count()).where(TaskRecord.state == TaskState.QUEUED)) or 0

    # -- queries ------------------------------------------------------------
    def get(self, key_id: int, task_id: str) -> TaskRecord | None:
        """The task if it exists and belongs to ``key_id``."""
        with self._sessions() as s:
            row = s.get(TaskRecord, task_id)
            return row if row is not None and row.key_id == key_id else None

    def wait(self, key_id: int, task_id: str, timeout: float) -> TaskRecord | None:
        """Poll until the task has finished or ``timeout`` passed (sync mode)."""
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            row = self.get(key_id, task_id)
            if row is None or TaskState(row.state).finished or time.monotonic() > deadline:
                return row
            time.sleep(delay)
            delay = min(0.2, delay * 1.5)

    def read_result(self, task_id: str, name: str) -> bytes:
        return self._store.get(result_key(task_id, name))

    # -- the worker ---------------------------------------------------------
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self._engine_factory()
        return self._engine

    def run(self, task_id: str) -> None:
        """Process one queued task to a final state (a failure of the task itself
        ends it with a negative state; only an unreachable database raises)."""
        with self._sessions.begin() as s:
            # Claim atomically: only one worker (thread or process) moves it off QUEUED.
            claimed = s.execute(
                update(TaskRecord)
                .where(TaskRecord.id == task_id, TaskRecord.state == TaskState.QUEUED)
                .values(state=TaskState.PREPARING, progress=5, attempts=TaskRecord.attempts + 1,
                        processed_at=time.time())
            ).rowcount
            if not claimed:
                return  # already handled (e.g. a duplicate queue entry after recovery)
            row = s.get(TaskRecord, task_id)
            assert row is not None
            job = (row.image_url, SegmentOptions(row.class_type, row.quality, row.detail_mode,
                                                 row.output_type), row.key_id)
        obs.QUEUE_DEPTH.set(self.queue_depth())
        image_url, options, key_id = job
        started = time.time()
        deadline = started + self._settings.task_timeout_seconds
        try:
            stored = self._process(task_id, image_url, options, deadline)
            self._finish(task_id, key_id, TaskState.SUCCEEDED, "success", stored)
        except TaskFailure as failure:
            self._finish(task_id, key_id, failure.state, failure.message)
        except Exception:
            log.exception("task failed", extra={"task_id": task_id})
            self._finish(task_id, key_id, TaskState.FAILED, "processing failed (internal error)")
        finally:
            self._store.delete_prefix(input_key(task_id))
            obs.TASK_SECONDS.observe(time.time() - started)

    def _progress(self, task_id: str, state: TaskState, progress: int) -> None:
        with self._sessions.begin() as s:
            row = s.get(TaskRecord, task_id)
            if row is not None:
                row.state, row.progress = state, progress

    def _check_deadline(self, deadline: float) -> None:
        if time.time() > deadline:
            raise TaskFailure(TaskState.TIMEOUT, f"processing timed out after "
                              f"{self._settings.task_timeout_seconds:g} seconds")

    def _process(self, task_id: str, image_url: str | None, options: SegmentOptions,
                 deadline: float) -> tuple[list[str], bool]:
        cfg = self._settings
        if image_url is not None:
            remaining = max(0.1, deadline - time.time())
            try:
                data = fetch_url(image_url, max_bytes=cfg.max_url_bytes, allow=cfg.url_allow_networks,
                                 connect_timeout=min(cfg.url_connect_timeout, remaining),
                                 read_timeout=min(cfg.url_read_timeout, remaining),
                                 max_redirects=cfg.url_max_redirects)
            except DownloadTooLarge as exc:
                raise TaskFailure(TaskState.URL_TOO_LARGE, str(exc)) from exc
            except DownloadFailed as exc:
                raise TaskFailure(TaskState.DOWNLOAD_FAILED, str(exc)) from exc
        else:
            try:
                data = self._store.get(input_key(task_id))
            except KeyError as exc:
                raise TaskFailure(TaskState.FAILED, "the uploaded image was lost") from exc
        self._progress(task_id, TaskState.PREPARING, 20)
        try:
            rgb = decode_image(data, cfg.max_side)
        except ImageTooLarge as exc:
            raise TaskFailure(TaskState.IMAGE_TOO_LARGE, str(exc)) from exc
        except InvalidImage as exc:
            raise TaskFailure(TaskState.INVALID_IMAGE, str(exc)) from exc
        self._check_deadline(deadline)
        self._progress(task_id, TaskState.PROCESSING, 40)
        seg = self.engine().segment(rgb, options)
        self._check_deadline(deadline)
        if seg.empty:
            raise TaskFailure(TaskState.EMPTY_RESULT, NO_PERSON)
        self._progress(task_id, TaskState.PUBLISHING, 85)
        has_zip = options.output_type in (2, 3)
        pngs, zip_bytes = encode_results(seg.class_masks, seg.clothing_masks, has_zip)
        try:
            for name, png in pngs.items():
                self._store.put(result_key(task_id, f"{name}.png"), png)
            if zip_bytes is not None:
                self._store.put(result_key(task_id, ZIP_NAME), zip_bytes)
        except StorageError as exc:
            self._store.delete_prefix(task_id)
            raise TaskFailure(TaskState.STORAGE_FAILED, f"storing the result failed: {exc}") from exc
        return list(pngs), has_zip

    def _finish(self, task_id: str, key_id: int, state: TaskState, message: str,
                stored: tuple[list[str], bool] = ([], False)) -> None:
        with self._sessions.begin() as s:
            row = s.get(TaskRecord, task_id)
            if row is None:
                return
            row.state, row.message = state, message
            row.progress = 100
            row.completed_at = time.time()
            row.class_names, row.has_zip = ",".join(stored[0]), stored[1]
            self._accounts.settle(s, key_id, succeeded=state == TaskState.SUCCEEDED)
        if state != TaskState.SUCCEEDED:
            obs.TASK_FAILURES.labels(state=str(int(state))).inc()
        log.info("task finished", extra={"task_id": task_id, "state": int(state), "detail": message})

    # -- restart and housekeeping --------------------------------------------
    def recover(self) -> None:
        """After a restart: re-queue waiting tasks, re-run or cancel interrupted ones."""
        with self._sessions.begin() as s:
            interrupted = s.scalars(select(TaskRecord).where(TaskRecord.state.in_(RUNNING_STATES))).all()
            for row in interrupted:
                if row.attempts >= self._settings.max_attempts:
                    row.state, row.progress = TaskState.CANCELLED, 100
                    row.message = "the task was cancelled: processing was interrupted by a server restart"
                    row.completed_at = time.time()
                    self._accounts.settle(s, row.key_id, succeeded=False)
                    self._store.delete_prefix(input_key(row.id))
                    log.warning("task cancelled after restart", extra={"task_id": row.id})
                else:
                    row.state, row.progress = TaskState.QUEUED, 0
            queued = s.scalars(select(TaskRecord.id).where(TaskRecord.state == TaskState.QUEUED)
                               .order_by(TaskRecord.created_at)).all()
        for task_id in queued:
            self._dispatcher.submit(task_id)
        obs.QUEUE_DEPTH.set(len(queued))

    def sweep(self, now: float | None = None) -> int:
        """Delete results and records of tasks finished more than the result TTL ago."""
        cutoff = (now or time.time()) - self._settings.result_ttl_seconds
        with self._sessions.begin() as s:
            rows = s.scalars(select(TaskRecord).where(TaskRecord.completed_at < cutoff)).all()
            for row in rows:
                self._store.delete_prefix(row.id)
                s.delete(row)
        return len(rows)
