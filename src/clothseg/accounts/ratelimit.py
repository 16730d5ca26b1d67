"""Per-key QPS limit: a token bucket holding up to ``qps`` requests (at least one).

In-process for the embedded mode; in Redis (one bucket per key, updated by one
Lua script, so atomic) when several API nodes must share the limit.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

import redis


class RateLimiter(Protocol):
    def allow(self, key_id: int, qps: float) -> bool: ...

    def check(self) -> None:
        """Raise LimiterUnavailable if the limiter cannot answer (for /healthz)."""
        ...


class LimiterUnavailable(RuntimeError):
    """The shared limiter cannot be asked (Redis unreachable)."""


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

    def check(self) -> None:
        pass  # in this process: always there


# The same bucket as TokenBucketLimiter, on Redis's clock so every node agrees on the time.
_BUCKET_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local qps = tonumber(ARGV[1])
local capacity = math.max(qps, 1)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'last')
local tokens = tonumber(b[1]) or capacity
local last = tonumber(b[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - last) * qps)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'last', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / qps) + 1)
return allowed
"""


class RedisTokenBucketLimiter:
    def __init__(self, url: str, prefix: str) -> None:
        self._redis = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        self._bucket = self._redis.register_script(_BUCKET_SCRIPT)
        self._prefix = prefix

    def allow(self, key_id: int, qps: float) -> bool:
        try:
            return bool(self._bucket(keys=[f"{self._prefix}qps:{key_id}"], args=[qps]))
        except redis.RedisError as exc:
            raise LimiterUnavailable(f"the shared QPS limiter (Redis) is unreachable: {exc}") from exc

    def check(self) -> None:
        try:
            self._redis.ping()
        except redis.RedisError as exc:
            raise LimiterUnavailable(f"Redis is unreachable: {exc}") from exc
