"""Task lifecycle: create (validated job -> database -> queue), run (worker ->
engine -> masks -> storage), query, recover after a restart, and sweep.

The database is the source of truth for every task: the queue only carries
task ids, so a task can never be lost with the queue.  Whoever works on a task
(a download on an API node, a worker) claims it with a token and holds a lease
on it that a heartbeat renews; only the token's holder can finish it, so a task
is charged once even if it was recovered while a slow holder still ran it.  A
task whose lease ran out (its process is gone) is re-run, or cancelled (-13)
after CLOTHSEG_MAX_ATTEMPTS; tasks that live processes hold are left alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from sqlalchemy import case, delete, func, select, update
from sqlalchemy.exc import IntegrityError
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
from clothseg.tasks.dispatch import Dispatcher, QueueUnavailable
from clothseg.tasks.download import DownloadPool
from clothseg.tasks.models import IdempotencyRecord, TaskRecord
from clothseg.tasks.notify import RECHECK_SECONDS, Notifier
from clothseg.tasks.states import RUNNING_STATES, WAITING_STATES, TaskFailure, TaskState

log = logging.getLogger("clothseg.tasks")

ZIP_NAME = "clothes.zip"
NO_PERSON = "no person found in the image"
# A downloaded image is held in memory up to this size, on local disk beyond it,
# until it is stored.
DOWNLOAD_SPOOL_BYTES = 1 << 20


class QueueFull(Exception):
    pass


class IdempotencyConflict(Exception):
    """An Idempotency-Key reused with a request that means something else."""


@dataclass(frozen=True)
class Job:
    """A validated request: exactly one of ``image`` (an open file) / ``image_url``."""

    image: BinaryIO | None
    image_url: str | None
    options: SegmentOptions
    return_base64: bool = False

    def digest(self) -> str:
        """SHA-256 of what the request asks for: the image bytes or URL and the options.
        The multipart framing (boundary, field order, "3" vs "3.0") does not count."""
        h = hashlib.sha256(json.dumps({
            "image_url": self.image_url, "return_base64": self.return_base64,
            "options": dataclasses.asdict(self.options),
        }, sort_keys=True).encode())
        if self.image is not None:
            self.image.seek(0)
            while chunk := self.image.read(1 << 20):
                h.update(chunk)
            self.image.seek(0)
        return h.hexdigest()


def input_key(task_id: str) -> str:
    return f"inputs/{task_id}"


def result_key(task_id: str, name: str) -> str:
    return f"{task_id}/{name}"


class TaskService:
    def __init__(self, sessions: sessionmaker, store: ResultStore, accounts: Accounts,
                 settings: Settings, dispatcher: Dispatcher, downloads: DownloadPool,
                 notifier: Notifier, engine_factory: Callable[[], Engine]) -> None:
        self._sessions = sessions
        self._store = store
        self._accounts = accounts
        self._settings = settings
        self._dispatcher = dispatcher
        self._downloads = downloads
        self._notifier = notifier
        self._engine_factory = engine_factory
        self._engine: Engine | None = None
        self._held: dict[str, str] = {}  # task id -> claim token, of the tasks this process works on
        self._held_lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    # -- creation -----------------------------------------------------------
    def create(self, key: KeyInfo, job: Job, idempotency_key: str | None = None) -> str:
        """Store the task and queue it; its id.  With ``idempotency_key``, a request
        already made with that key returns the task it made instead (raising
        IdempotencyConflict if it asked for something else).  Raises QueueFull or
        InsufficientCredits."""
        digest = job.digest() if idempotency_key is not None else ""
        if idempotency_key is not None and (earlier := self._remembered(key.id, idempotency_key, digest)):
            return earlier
        if self.queue_depth() >= self._settings.max_queue:
            raise QueueFull(f"the task queue is full ({self._settings.max_queue} waiting); retry later")
        self._accounts.reserve(key.id)
        task_id = str(uuid.uuid4())
        try:
            if job.image is not None:
                with self._store.writer(input_key(task_id)) as out:
                    shutil.copyfileobj(job.image, out)
            o = job.options
            with self._sessions.begin() as s:
                s.add(TaskRecord(
                    id=task_id, key_id=key.id, state=TaskState.QUEUED, progress=0,
                    image_url=job.image_url, class_type=o.class_type, output_type=o.output_type,
                    quality=o.quality, detail_mode=o.detail_mode, return_base64=job.return_base64,
                    created_at=time.time(), lease_expires_at=self._queue_lease(),
                ))
                if idempotency_key is not None:
                    s.add(IdempotencyRecord(key_id=key.id, idempotency_key=idempotency_key,
                                            request_hash=digest, task_id=task_id))
            self._submit(task_id, needs_download=job.image_url is not None)
        except Exception as exc:
            with self._sessions.begin() as s:  # as if never asked: no task, no hold, no input
                s.execute(delete(TaskRecord).where(TaskRecord.id == task_id))
                s.execute(delete(IdempotencyRecord).where(IdempotencyRecord.task_id == task_id))
                self._accounts.settle(s, key.id, succeeded=False)
            self._store.delete_prefix(input_key(task_id))
            # The same key arrived twice at once and the other request stored its task first.
            if (isinstance(exc, IntegrityError) and idempotency_key is not None
                    and (earlier := self._remembered(key.id, idempotency_key, digest))):
                return earlier
            raise
        obs.QUEUE_DEPTH.set(self.queue_depth())
        log.info("task created", extra={"task_id": task_id, "key_id": key.id})
        return task_id

    def _remembered(self, key_id: int, idempotency_key: str, digest: str) -> str | None:
        """The task an earlier request with this Idempotency-Key made, if it has not expired."""
        with self._sessions.begin() as s:
            record = s.get(IdempotencyRecord, (key_id, idempotency_key))
            if record is None:
                return None
            task = s.get(TaskRecord, record.task_id)
            if task is None or self._expired(task):
                s.delete(record)  # forgotten with its task: the key may start a new one
                return None
            if record.request_hash != digest:
                raise IdempotencyConflict(
                    "this Idempotency-Key was already used with a different request "
                    f"(task {record.task_id}); use a new key for a new request")
            return record.task_id

    def _submit(self, task_id: str, needs_download: bool) -> None:
        """To the downloads if the image must be fetched first, else to the workers
        (QueueUnavailable if the broker cannot take it)."""
        if needs_download:
            self._downloads.submit(task_id)
        else:
            self._dispatcher.submit(task_id)

    def queue_depth(self) -> int:
        with self._sessions() as s:
            return s.scalar(select(func.count()).where(TaskRecord.state.in_(WAITING_STATES))) or 0

    # -- queries ------------------------------------------------------------
    def get(self, key_id: int, task_id: str) -> TaskRecord | None:
        """The task if it exists, belongs to ``key_id`` and has not expired."""
        with self._sessions() as s:
            row = s.get(TaskRecord, task_id)
            return row if row is not None and row.key_id == key_id and not self._expired(row) else None

    def expires_at(self, row: TaskRecord) -> int | None:
        """When a finished task, its result links and its record expire (Unix seconds)."""
        if row.completed_at is None:
            return None
        return int(row.completed_at + self._settings.result_ttl_seconds)

    def _expired(self, row: TaskRecord) -> bool:
        expires = self.expires_at(row)
        return expires is not None and time.time() > expires

    def wait(self, key_id: int, task_id: str, timeout: float) -> TaskRecord | None:
        """The task once it has finished or ``timeout`` passed (sync mode): woken by its
        finished notification, re-reading the database now and then in case one is lost."""
        deadline = time.monotonic() + timeout
        with self._notifier.waiter(task_id) as finished:
            while True:
                row = self.get(key_id, task_id)
                left = deadline - time.monotonic()
                if row is None or TaskState(row.state).finished or left <= 0:
                    return row
                finished.wait(min(left, RECHECK_SECONDS))
                finished.clear()

    def read_result(self, task_id: str, name: str) -> bytes:
        return self._store.get(result_key(task_id, name))

    # -- claims and leases ------------------------------------------------------
    def start(self) -> None:
        """Begin renewing the leases of the tasks this process holds."""
        self._stop.clear()
        self._heartbeat = threading.Thread(target=self._renew_leases, name="clothseg-heartbeat", daemon=True)
        self._heartbeat.start()

    def stop(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)

    def _renew_leases(self) -> None:
        lease = self._settings.lease_seconds
        while not self._stop.wait(lease / 3):
            with self._held_lock:
                held = list(self._held.items())
            try:
                with self._sessions.begin() as s:
                    for task_id, token in held:
                        s.execute(update(TaskRecord).where(TaskRecord.id == task_id, TaskRecord.owner == token)
                                  .values(lease_expires_at=time.time() + lease))
            except Exception:  # the database is restarting: the next beat tries again
                log.exception("could not renew task leases")

    def _claim(self, task_id: str, states: tuple[TaskState, ...], **values: object) -> str | None:
        """Atomically take a task found in one of ``states``: its claim token, or None if
        another process took it first (or it is gone)."""
        token = str(uuid.uuid4())
        with self._sessions.begin() as s:
            claimed = s.execute(
                update(TaskRecord).where(TaskRecord.id == task_id, TaskRecord.state.in_(states))
                .values(owner=token, lease_expires_at=time.time() + self._settings.lease_seconds, **values)
            ).rowcount
        if not claimed:
            return None
        with self._held_lock:
            self._held[task_id] = token
        return token

    def _queue_lease(self) -> float:
        """Until when a task waiting in a queue (no holder) may wait before it is sent
        again: a broker that lost its message, or an API node that died with the task
        in its download queue, never leaves it waiting for good.  A second message
        is harmless: the first claim wins."""
        return time.time() + self._settings.task_timeout_seconds

    def _release(self, task_id: str) -> None:
        with self._held_lock:
            self._held.pop(task_id, None)

    # -- the worker ---------------------------------------------------------
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self._engine_factory()
        return self._engine

    async def download(self, task_id: str) -> None:
        """Fetch a queued task's image_url into its input, then queue it for a worker.
        The download ends at the task's deadline or CLOTHSEG_URL_TIMEOUT, whichever
        comes first; a failure ends the task (never raises, but for cancellation)."""
        claimed = await asyncio.to_thread(self._claim_download, task_id)
        if claimed is None:
            return
        url, key_id, started, token = claimed
        try:
            await self._download(task_id, url, key_id, started, token)
        finally:
            self._release(task_id)

    async def _download(self, task_id: str, url: str, key_id: int, started: float, token: str) -> None:
        cfg = self._settings
        deadline = started + cfg.task_timeout_seconds
        task_bound = deadline - time.time() <= cfg.url_timeout
        try:
            with tempfile.SpooledTemporaryFile(max_size=DOWNLOAD_SPOOL_BYTES) as body:
                try:
                    async with asyncio.timeout(min(cfg.url_timeout, deadline - time.time())):
                        await fetch_url(url, body, max_bytes=cfg.max_url_bytes, allow=cfg.url_allowlist,
                                        connect_timeout=cfg.url_connect_timeout,
                                        read_timeout=cfg.url_read_timeout, max_redirects=cfg.url_max_redirects)
                except TimeoutError:
                    if task_bound:
                        raise self._timed_out() from None
                    raise TaskFailure(TaskState.DOWNLOAD_FAILED, "timed out downloading image_url: it took "
                                      f"longer than {cfg.url_timeout:g} seconds") from None
                except DownloadTooLarge as exc:
                    raise TaskFailure(TaskState.URL_TOO_LARGE, str(exc)) from exc
                except DownloadFailed as exc:
                    raise TaskFailure(TaskState.DOWNLOAD_FAILED, str(exc)) from exc
                # Stored off the event loop: an upload to an object store takes a while,
                # and the node's other downloads go on meanwhile.
                try:
                    await asyncio.to_thread(self._store_input, task_id, body)
                except StorageError as exc:
                    raise TaskFailure(TaskState.STORAGE_FAILED,
                                      f"storing the downloaded image failed: {exc}") from exc
        except TaskFailure as failure:
            await asyncio.to_thread(self._finish, task_id, token, key_id, failure.state, failure.message)
            return
        except Exception:
            log.exception("download failed", extra={"task_id": task_id})
            await asyncio.to_thread(self._finish, task_id, token, key_id, TaskState.FAILED,
                                    "processing failed (internal error)")
            return
        # Handed to the queue: no one holds it until a worker claims it.
        await asyncio.to_thread(self._progress, task_id, token, TaskState.WAITING, 15, handed_over=True)
        try:
            self._dispatcher.submit(task_id)
        except QueueUnavailable as exc:  # recovered (downloaded again) once the broker is back
            log.warning("queue unreachable after a download", extra={"task_id": task_id, "error": str(exc)})
            await asyncio.to_thread(self._expire_lease, task_id)

    def _store_input(self, task_id: str, body: BinaryIO) -> None:
        body.seek(0)
        with self._store.writer(input_key(task_id)) as out:
            shutil.copyfileobj(body, out)

    def _claim_download(self, task_id: str) -> tuple[str, int, float, str] | None:
        now = time.time()
        # A download starts an image_url task, so a restart during it counts towards
        # CLOTHSEG_MAX_ATTEMPTS (the worker's claim after it does not count again).
        token = self._claim(task_id, (TaskState.QUEUED,), state=TaskState.PREPARING, progress=5, processed_at=now,
                            attempts=TaskRecord.attempts + 1)
        if token is None:
            return None
        with self._sessions() as s:
            row = s.get(TaskRecord, task_id)
            if row is None or row.image_url is None:
                self._release(task_id)
                return None
            return row.image_url, row.key_id, now, token

    def run(self, task_id: str) -> None:
        """Process one task whose image is stored to a final state (a failure of the
        task itself ends it with a negative state; only an unreachable database raises)."""
        # Only one worker (thread or process) moves it on; a duplicate delivery finds it taken.
        token = self._claim(task_id, WAITING_STATES, state=TaskState.PREPARING, progress=20,
                            attempts=TaskRecord.attempts + case((TaskRecord.image_url.is_(None), 1), else_=0),
                            processed_at=func.coalesce(TaskRecord.processed_at, time.time()))
        if token is None:
            return
        try:
            self._run(task_id, token)
        finally:
            self._release(task_id)

    def _run(self, task_id: str, token: str) -> None:
        with self._sessions() as s:
            row = s.get(TaskRecord, task_id)
            assert row is not None and row.processed_at is not None
            options = SegmentOptions(row.class_type, row.quality, row.detail_mode, row.output_type)
            key_id, started = row.key_id, row.processed_at
        obs.QUEUE_DEPTH.set(self.queue_depth())
        # For an image_url the clock started with the download.
        deadline = started + self._settings.task_timeout_seconds
        try:
            stored = self._process(task_id, token, options, deadline)
            self._finish(task_id, token, key_id, TaskState.SUCCEEDED, "success", stored)
        except TaskFailure as failure:
            self._finish(task_id, token, key_id, failure.state, failure.message)
        except Exception:
            log.exception("task failed", extra={"task_id": task_id})
            self._finish(task_id, token, key_id, TaskState.FAILED, "processing failed (internal error)")
        finally:
            self._store.delete_prefix(input_key(task_id))
            obs.TASK_SECONDS.observe(time.time() - started)

    def _progress(self, task_id: str, token: str, state: TaskState, progress: int,
                  handed_over: bool = False) -> None:
        """Move the holder's task on; ``handed_over`` gives up the claim (the queue has it)."""
        released = {"owner": None, "lease_expires_at": self._queue_lease()} if handed_over else {}
        with self._sessions.begin() as s:
            s.execute(update(TaskRecord).where(TaskRecord.id == task_id, TaskRecord.owner == token)
                      .values(state=state, progress=progress, **released))

    def _expire_lease(self, task_id: str) -> None:
        """Leave a waiting task whose queue could not take it to the next recovery."""
        with self._sessions.begin() as s:
            s.execute(update(TaskRecord).where(TaskRecord.id == task_id, TaskRecord.owner.is_(None))
                      .values(lease_expires_at=0.0))

    def _timed_out(self) -> TaskFailure:
        return TaskFailure(TaskState.TIMEOUT, f"processing timed out after "
                           f"{self._settings.task_timeout_seconds:g} seconds")

    def _check_deadline(self, deadline: float) -> None:
        if time.time() > deadline:
            raise self._timed_out()

    def _process(self, task_id: str, token: str, options: SegmentOptions,
                 deadline: float) -> tuple[list[str], bool]:
        self._check_deadline(deadline)
        rgb = self._decode(task_id)
        self._check_deadline(deadline)
        self._progress(task_id, token, TaskState.PROCESSING, 40)
        seg = self.engine().segment(rgb, options)
        self._check_deadline(deadline)
        if seg.empty:
            raise TaskFailure(TaskState.EMPTY_RESULT, NO_PERSON)
        self._progress(task_id, token, TaskState.PUBLISHING, 85)
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

    def _decode(self, task_id: str) -> np.ndarray:
        """The task's image as RGB; the file's bytes are not kept while the model runs."""
        try:
            data = self._store.get(input_key(task_id))
        except KeyError as exc:
            raise TaskFailure(TaskState.FAILED, "the task's image was lost") from exc
        try:
            return decode_image(data, self._settings.max_side)
        except ImageTooLarge as exc:
            raise TaskFailure(TaskState.IMAGE_TOO_LARGE, str(exc)) from exc
        except InvalidImage as exc:
            raise TaskFailure(TaskState.INVALID_IMAGE, str(exc)) from exc

    def _finish(self, task_id: str, token: str, key_id: int, state: TaskState, message: str,
                stored: tuple[list[str], bool] = ([], False)) -> None:
        """End the task if ``token`` still holds it, settling its credits in the same
        transaction; a holder whose task was recovered meanwhile changes nothing."""
        with self._sessions.begin() as s:
            ended = s.execute(
                update(TaskRecord).where(TaskRecord.id == task_id, TaskRecord.owner == token)
                .values(state=state, message=message, progress=100, completed_at=time.time(),
                        class_names=",".join(stored[0]), has_zip=stored[1], owner=None, lease_expires_at=None)
            ).rowcount
            if ended:
                self._accounts.settle(s, key_id, succeeded=state == TaskState.SUCCEEDED)
        if not ended:
            log.warning("task was recovered by another process meanwhile; result dropped",
                        extra={"task_id": task_id})
            return
        self._notifier.finished(task_id)
        if state != TaskState.SUCCEEDED:
            obs.TASK_FAILURES.labels(state=str(int(state))).inc()
        log.info("task finished", extra={"task_id": task_id, "state": int(state), "detail": message})

    # -- restart and housekeeping --------------------------------------------
    def recover(self, at_start: bool = False) -> int:
        """Re-run (or cancel, -13, after CLOTHSEG_MAX_ATTEMPTS) the tasks whose holder is
        gone (its lease ran out), and send again the waiting tasks no one took in time
        (their queue lease ran out).  ``at_start`` in the embedded mode, where this
        process held every lease and its in-process queue is lost: every interrupted
        task is recovered and every waiting one queued again.  The number of tasks
        recovered or sent again."""
        now = time.time()
        lost = select(TaskRecord.id, TaskRecord.state, TaskRecord.owner, TaskRecord.attempts, TaskRecord.key_id) \
            .where(TaskRecord.state.in_(RUNNING_STATES))
        if not at_start:  # downloaded and handed to the queue: a waiting task, below
            lost = lost.where(TaskRecord.state != TaskState.WAITING,
                              func.coalesce(TaskRecord.lease_expires_at, 0.0) < now)
        with self._sessions() as s:
            candidates = s.execute(lost).all()
        cancelled: list[str] = []
        for task_id, state, owner, attempts, key_id in candidates:
            give_up = attempts >= self._settings.max_attempts
            change = ({"state": TaskState.CANCELLED, "progress": 100, "completed_at": now,
                       "message": "the task was cancelled: its processing was interrupted too often"} if give_up
                      else {"state": TaskState.QUEUED, "progress": 0, "processed_at": None})  # from the start
            with self._sessions.begin() as s:
                # Only if no one moved it meanwhile (its holder finishing late, another node recovering it).
                taken = s.execute(update(TaskRecord).where(
                    TaskRecord.id == task_id, TaskRecord.state == state,
                    TaskRecord.owner.is_not_distinct_from(owner),
                ).values(owner=None, lease_expires_at=None, **change)).rowcount
                if taken and give_up:
                    self._accounts.settle(s, key_id, succeeded=False)
            if taken:
                if give_up:
                    cancelled.append(task_id)
                    obs.TASK_FAILURES.labels(state=str(int(TaskState.CANCELLED))).inc()
                log.warning("task cancelled after its worker stopped" if give_up
                            else "task re-queued after its worker stopped", extra={"task_id": task_id})
        for task_id in cancelled:
            self._store.delete_prefix(input_key(task_id))
            self._notifier.finished(task_id)
        # Waiting tasks to send (again): the re-queued ones above have no queue lease.
        waiting = select(TaskRecord.id, TaskRecord.state, TaskRecord.image_url, TaskRecord.lease_expires_at) \
            .where(TaskRecord.state.in_(WAITING_STATES), TaskRecord.owner.is_(None)) \
            .order_by(TaskRecord.created_at)
        if not at_start:
            waiting = waiting.where(func.coalesce(TaskRecord.lease_expires_at, 0.0) < now)
        with self._sessions() as s:
            stale = s.execute(waiting).all()
        sent = 0
        for task_id, state, image_url, lease in stale:
            with self._sessions.begin() as s:  # one node sends it
                if not s.execute(update(TaskRecord).where(
                        TaskRecord.id == task_id, TaskRecord.state == state, TaskRecord.owner.is_(None),
                        TaskRecord.lease_expires_at.is_not_distinct_from(lease),
                ).values(lease_expires_at=self._queue_lease())).rowcount:
                    continue
            try:
                self._submit(task_id, needs_download=state == TaskState.QUEUED and image_url is not None)
                sent += 1
            except QueueUnavailable as exc:  # the next recovery tries again
                log.warning("queue unreachable; task left for recovery", extra={"task_id": task_id,
                                                                                  "error": str(exc)})
                self._expire_lease(task_id)
        obs.QUEUE_DEPTH.set(self.queue_depth())
        return len(cancelled) + sent

    def sweep(self, now: float | None = None) -> int:
        """Delete results and records of tasks finished more than the result TTL ago."""
        cutoff = (now or time.time()) - self._settings.result_ttl_seconds
        with self._sessions.begin() as s:
            rows = s.scalars(select(TaskRecord).where(TaskRecord.completed_at < cutoff)).all()
            for row in rows:
                self._store.delete_prefix(row.id)
                s.delete(row)
            s.execute(delete(IdempotencyRecord).where(IdempotencyRecord.task_id.in_([r.id for r in rows])))
        return len(rows)
