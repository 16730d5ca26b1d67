"""The storage interface every backend (local disk now, S3-style later) implements."""

from __future__ import annotations

from typing import Protocol


class StorageError(RuntimeError):
    """A result could not be written or read (API state -2 when writing)."""


class ResultStore(Protocol):
    """Objects addressed by keys like ``"<task_id>/hair.png"``."""

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes:
        """Raise KeyError if absent."""
        ...

    def delete_prefix(self, prefix: str) -> None:
        """Delete every object under ``prefix`` (a task's folder)."""
        ...
