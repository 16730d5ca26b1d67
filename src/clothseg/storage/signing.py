"""HMAC-signed result links that stop working after their lifetime."""

from __future__ import annotations

import hashlib
import hmac
import time


class LinkSigner:
    def __init__(self, secret: bytes, ttl_seconds: float) -> None:
        self._secret = secret
        self.ttl_seconds = ttl_seconds

    def _signature(self, key: str, expires: int) -> str:
        msg = f"{key}\n{expires}".encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()

    def sign(self, key: str, expires: int) -> str:
        """Query string (``expires=...&sig=...``) for ``key``, valid until ``expires``."""
        return f"expires={expires}&sig={self._signature(key, expires)}"

    def verify(self, key: str, expires: int, sig: str, now: float | None = None) -> bool:
        if (now if now is not None else time.time()) > expires:
            return False
        return hmac.compare_digest(self._signature(key, expires), sig)
