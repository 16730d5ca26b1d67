"""Which `clothseg worker` processes are alive, for an API node's /healthz.

The broker cannot say it for a Redis queue (workers pop messages; nothing lists
them) and remote control is off (no pidbox queues), so each worker refreshes a
Redis key of its own that expires one lease after its last refresh: a worker
killed with -9 drops out of the count within a lease.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading

import redis

log = logging.getLogger("clothseg.tasks")


class WorkerRoster:
    def __init__(self, url: str, prefix: str, lease_seconds: float) -> None:
        self._redis = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        self._prefix = f"{prefix}worker:"
        self._lease_ms = max(1, math.ceil(lease_seconds * 1000))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def alive(self) -> int | None:
        """Workers that reported within the last lease (None: Redis cannot be asked)."""
        try:
            return sum(1 for _ in self._redis.scan_iter(match=f"{self._prefix}*", count=500))
        except redis.RedisError:
            return None

    def report(self, name: str) -> None:
        self._redis.set(f"{self._prefix}{name}", b"1", px=self._lease_ms)

    def start_reporting(self) -> None:
        """Report this process (host and pid) every third of a lease until ``stop_reporting``."""
        name = f"{socket.gethostname()}:{os.getpid()}"

        def loop() -> None:
            while True:
                try:
                    self.report(name)
                except redis.RedisError as exc:  # counted again once Redis answers
                    log.warning("could not report this worker as alive", extra={"error": str(exc)})
                if self._stop.wait(self._lease_ms / 3000):
                    break
            with contextlib.suppress(redis.RedisError):
                self._redis.delete(f"{self._prefix}{name}")  # a clean stop leaves the count at once

        self._stop.clear()
        self._thread = threading.Thread(target=loop, name="clothseg-roster", daemon=True)
        self._thread.start()

    def stop_reporting(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
