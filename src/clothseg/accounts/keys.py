"""API keys: creation, authentication and the credit ledger.

Keys are 32 random bytes (URL-safe text) stored only as their SHA-256; a
high-entropy token needs no slow hash.  Lookup is by hash, then the hashes are
compared again in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import sessionmaker

from clothseg.accounts.models import ApiKey

TASK_COST = 3  # credits a successful task costs (spec: "A successful call consumes 3 credits")


class InsufficientCredits(Exception):
    def __init__(self, available: int) -> None:
        super().__init__(
            f"insufficient credits: a task needs {TASK_COST}, this key has {available} available"
        )


@dataclass(frozen=True)
class KeyInfo:
    id: int
    prefix: str
    name: str
    credits: int
    reserved: int
    qps: float
    revoked: bool
    created_at: float


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(row.id, row.prefix, row.name, row.credits, row.reserved, row.qps,
                   row.revoked, row.created_at)


class Accounts:
    def __init__(self, sessions: sessionmaker) -> None:
        self._sessions = sessions

    def create(self, credits: int, qps: float, name: str = "") -> tuple[str, KeyInfo]:
        key = "cs_" + secrets.token_urlsafe(32)
        row = ApiKey(key_hash=_hash(key), prefix=key[:10], name=name, credits=credits,
                     reserved=0, qps=qps, revoked=False, created_at=time.time())
        with self._sessions.begin() as s:
            s.add(row)
            s.flush()
            return key, _info(row)

    def authenticate(self, key: str | None) -> KeyInfo | None:
        """The key's record, or None for a missing, unknown or revoked key."""
        if not key:
            return None
        digest = _hash(key)
        with self._sessions() as s:
            row = s.scalars(select(ApiKey).where(ApiKey.key_hash == digest)).first()
            if row is None or not hmac.compare_digest(row.key_hash, digest) or row.revoked:
                return None
            return _info(row)

    def reserve(self, key_id: int) -> None:
        """Hold TASK_COST credits for a new task, atomically."""
        with self._sessions.begin() as s:
            done = s.execute(
                update(ApiKey)
                .where(ApiKey.id == key_id, ApiKey.credits - ApiKey.reserved >= TASK_COST)
                .values(reserved=ApiKey.reserved + TASK_COST)
            ).rowcount
            if not done:
                row = s.get(ApiKey, key_id)
                raise InsufficientCredits(0 if row is None else row.credits - row.reserved)

    def settle(self, session, key_id: int, succeeded: bool) -> None:  # type: ignore[no-untyped-def]
        """Release a task's hold, charging it if the task succeeded.  Runs inside
        the caller's transaction so the charge and the task's final state commit together."""
        charge = TASK_COST if succeeded else 0
        session.execute(
            update(ApiKey).where(ApiKey.id == key_id)
            .values(reserved=ApiKey.reserved - TASK_COST, credits=ApiKey.credits - charge)
        )

    def list(self) -> list[KeyInfo]:
        with self._sessions() as s:
            return [_info(r) for r in s.scalars(select(ApiKey).order_by(ApiKey.id))]

    def find(self, ident: str) -> KeyInfo | None:
        """A key by numeric id, prefix or the full key."""
        with self._sessions() as s:
            cond = (ApiKey.id == int(ident)) if ident.isdigit() else (
                (ApiKey.prefix == ident[:10]) if len(ident) <= 10 else (ApiKey.key_hash == _hash(ident))
            )
            rows = list(s.scalars(select(ApiKey).where(cond)))
            return _info(rows[0]) if len(rows) == 1 else None

    def revoke(self, key_id: int) -> None:
        with self._sessions.begin() as s:
            s.execute(update(ApiKey).where(ApiKey.id == key_id).values(revoked=True))

    def add_credits(self, key_id: int, amount: int) -> KeyInfo:
        with self._sessions.begin() as s:
            s.execute(update(ApiKey).where(ApiKey.id == key_id).values(credits=ApiKey.credits + amount))
            row = s.get(ApiKey, key_id)
            assert row is not None
            return _info(row)
