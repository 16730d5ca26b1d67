"""How queued task ids reach a worker.

The embedded mode runs a pool of worker threads in the server process; the
scale-out publishes them to Celery workers (tasks/celery_queue.py).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("clothseg.tasks")


class QueueUnavailable(RuntimeError):
    """The queue (a broker) cannot take a task now: create answers 500 and holds no credit."""


class Dispatcher(Protocol):
    def submit(self, task_id: str) -> None:
        """Raise QueueUnavailable if the queue cannot take it now."""
        ...

    def check(self) -> None:
        """Raise QueueUnavailable if the queue is unreachable (for /healthz)."""
        ...

    def start(self, run: Callable[[str], None]) -> None:
        """Begin handing submitted ids to ``run`` (which never raises)."""
        ...

    def stop(self) -> None: ...


class ThreadPoolDispatcher:
    def __init__(self, workers: int) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._workers = workers
        self._threads: list[threading.Thread] = []

    def submit(self, task_id: str) -> None:
        self._queue.put(task_id)

    def check(self) -> None:
        pass  # in this process: always there

    def start(self, run: Callable[[str], None]) -> None:
        def loop() -> None:
            while (task_id := self._queue.get()) is not None:
                try:
                    run(task_id)
                except Exception:  # e.g. the database is unreachable: keep the worker alive
                    log.exception("worker error", extra={"task_id": task_id})

        for i in range(self._workers):
            t = threading.Thread(target=loop, name=f"clothseg-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(timeout=5)
        self._threads.clear()
