"""The storage interface every backend (local disk, S3-compatible bucket) implements."""

from __future__ import annotations

import re
from contextlib import AbstractContextManager
from typing import BinaryIO, Protocol

# One rule for every backend, so a key that works on local disk works in a bucket and
# vice versa: path-like segments, no empty ones, nothing that climbs out of the root.
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_.-]+)*$")


def check_key(key: str) -> str:
    """``key`` itself if it is a valid object key; KeyError (as for an absent object) if not."""
    if not KEY_PATTERN.match(key) or ".." in key:
        raise KeyError(key)
    return key


class StorageError(RuntimeError):
    """A result could not be written or read (API state -2 when writing)."""


class ResultStore(Protocol):
    """Objects addressed by keys like ``"<task_id>/hair.png"``."""

    def put(self, key: str, data: bytes) -> None: ...

    def writer(self, key: str) -> AbstractContextManager[BinaryIO]:
        """A file to stream an object into; it appears under ``key`` only if the
        block ends without an exception (large inputs never sit in memory)."""
        ...

    def get(self, key: str) -> bytes:
        """Raise KeyError if absent."""
        ...

    def delete_prefix(self, prefix: str) -> None:
        """Delete the object ``prefix`` and every object under ``prefix + "/"`` (a task's
        folder), never one that merely starts with the same characters."""
        ...

    def link(self, key: str, expires: int) -> str | None:
        """A URL a client can fetch ``key`` from directly until ``expires`` (Unix seconds),
        such as a presigned S3 URL; None when the store has no such URL, and the API then
        serves the object itself under a /results/... link signed with LinkSigner."""
        ...
