"""HMAC-signed result links that stop working after their lifetime."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from clothseg.storage.models import SigningSecret


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


def shared_secret(sessions: sessionmaker, legacy_file: Path | None = None) -> bytes:
    """The link-signing key every node sharing the database uses, made once.  An
    embedded data folder's older ``secret.key`` is adopted, so its links keep working."""
    with sessions.begin() as s:
        row = s.get(SigningSecret, "links")
        if row is not None:
            return row.value
    value = legacy_file.read_bytes() if legacy_file is not None and legacy_file.is_file() else secrets.token_bytes(32)
    try:
        with sessions.begin() as s:
            s.add(SigningSecret(name="links", value=value))
    except IntegrityError:
        pass  # another node made it at the same moment: use theirs
    with sessions.begin() as s:
        row = s.get(SigningSecret, "links")
        assert row is not None
        return row.value
