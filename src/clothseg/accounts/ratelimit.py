"""Per-key QPS limit: a token bucket holding up to ``qps`` requests.

In-process for the embedded mode; a shared (Redis) limiter implements the same
``allow`` for several server processes.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class RateLimiter(Protocol):
    def allow(self, key_id: int, qps: float) -> bool: ...


class TokenBucketLimiter:
    def __init__(self) -> None:
        self._buckets: dict[int, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, key_id: int, qps: float) -> bool:
        now = time.monotonic()
        capacity = max(qps, 1.0)
        with self._lock:
            tokens, last = self._buckets.get(key_id, (capacity, now))
            tokens = min(capacity, tokens + (now - last) * qps)
            if tokens < 1.0:
                self._buckets[key_id] = (tokens, now)
                return False
            self._buckets[key_id] = (tokens - 1.0, now)
            return True
