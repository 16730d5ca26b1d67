"""Task-finished notifications, so a sync request wakes when its task ends
instead of polling the database.

In-process events in the embedded mode; Redis pub/sub when the worker that
finishes a task runs on another machine than the API node that waits for it.
A waiter still re-reads the database now and then (``RECHECK_SECONDS``), so a
notification lost with a Redis connection only delays an answer, never loses it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Protocol

import redis

log = logging.getLogger("clothseg.tasks")

RECHECK_SECONDS = 1.0


class Notifier(Protocol):
    def waiter(self, task_id: str) -> contextlib.AbstractContextManager[threading.Event]:
        """An event set when ``task_id`` finishes; enter it before reading the task's state."""
        ...

    def finished(self, task_id: str) -> None:
        """Tell every waiter (on any node) that ``task_id`` reached a final state."""
        ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class LocalNotifier:
    """Waiters of this process, by task id."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[threading.Event]] = defaultdict(set)
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def waiter(self, task_id: str) -> Iterator[threading.Event]:
        event = threading.Event()
        with self._lock:
            self._waiters[task_id].add(event)
        try:
            yield event
        finally:
            with self._lock:
                waiting = self._waiters.get(task_id)
                if waiting is not None:
                    waiting.discard(event)
                    if not waiting:
                        del self._waiters[task_id]

    def wake(self, task_id: str) -> None:
        with self._lock:
            for event in self._waiters.get(task_id, ()):
                event.set()

    def finished(self, task_id: str) -> None:
        self.wake(task_id)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class RedisNotifier(LocalNotifier):
    """Publishes finished task ids on one channel; a listener thread wakes this node's waiters."""

    def __init__(self, url: str, prefix: str) -> None:
        super().__init__()
        self._redis = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        self._channel = f"{prefix}task-finished"
        self._url = url
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def finished(self, task_id: str) -> None:
        self.wake(task_id)  # a waiter on this node needs no round trip
        try:
            self._redis.publish(self._channel, task_id)
        except redis.RedisError as exc:  # the waiters' re-check finds the task done anyway
            log.warning("could not publish a task-finished notification", extra={"error": str(exc)})

    def start(self) -> None:
        self._thread = threading.Thread(target=self._listen, name="clothseg-notifications", daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                # No socket timeout: a subscription waits for messages as long as it takes.
                pubsub = redis.Redis.from_url(self._url, socket_connect_timeout=2).pubsub(
                    ignore_subscribe_messages=True)
                pubsub.subscribe(self._channel)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self.wake(message["data"].decode())
                pubsub.close()
            except redis.RedisError as exc:
                log.warning("task-finished notifications interrupted; reconnecting", extra={"error": str(exc)})
                time.sleep(1.0)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
