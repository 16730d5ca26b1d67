"""Results in an S3-compatible bucket, shared by every API node and worker.

Endpoint, credentials and region come "the standard AWS way" (AWS_ENDPOINT_URL[_S3],
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION / AWS_DEFAULT_REGION, ~/.aws files):
boto3 reads them itself, so nothing here does.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import BinaryIO, cast

import boto3
from boto3.exceptions import Boto3Error
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from clothseg.storage.base import StorageError, check_key

# Bounded waits, so a dead endpoint fails a request in seconds rather than hanging it;
# "standard" retries cover the throttling and transient 5xx errors S3 is known for.
CLIENT_CONFIG = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"},
                       signature_version="s3v4")

# A writer keeps this much in memory before spilling to a temporary file: masks stay in
# RAM, large uploaded inputs go to disk.
SPOOL_BYTES = 1 << 20
# delete_objects takes at most this many keys per call, and list_objects_v2 returns at
# most this many per page (both variables so that tests can cover several pages).
DELETE_BATCH = 1000
LIST_PAGE = 1000
# SigV4 presigned URLs cannot outlive a week; S3 refuses longer ones outright.
MAX_LINK_SECONDS = 7 * 24 * 3600
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}


def make_client(endpoint_url: str | None = None) -> BaseClient:
    """An S3 client configured from the environment and ~/.aws, with CLIENT_CONFIG;
    ``endpoint_url`` overrides the endpoint they name."""
    # A session of its own: boto3's default session is not safe to build clients from
    # concurrently, while a built client is safe to share between threads.
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=CLIENT_CONFIG)


def _reason(exc: Exception) -> str:
    """One line on why a call failed, for logs and API errors (no traceback)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        message = error.get("Message")
        return f"{code}: {message}" if message else str(code)
    return str(exc) or type(exc).__name__


def _chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


class S3ResultStore:
    """Objects named ``<prefix>/<key>`` in ``bucket``; the same keys and semantics as
    LocalResultStore, plus presigned links that expire.  ``link_client`` signs the
    links for the endpoint clients reach (e.g. a public hostname in front of a MinIO
    that the service reaches on a private address); by default, ``client`` signs them."""

    def __init__(self, bucket: str, prefix: str = "", client: BaseClient | None = None,
                 link_client: BaseClient | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client = client if client is not None else make_client()
        # Presigning is computed locally, so the service never needs to reach this endpoint.
        self._link_client = link_client if link_client is not None else self._client

    @property
    def endpoint(self) -> str:
        """The endpoint URL the client talks to (from AWS_ENDPOINT_URL, ~/.aws or the region)."""
        return str(self._client.meta.endpoint_url)

    @property
    def location(self) -> str:
        """``s3://bucket/prefix``: named in errors, which may reach clients, without the endpoint."""
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    @property
    def link_endpoint(self) -> str:
        """The endpoint URL result links point to."""
        return str(self._link_client.meta.endpoint_url)

    def __repr__(self) -> str:
        links = f", links via {self.link_endpoint}" if self.link_endpoint != self.endpoint else ""
        return f"{self.location} at {self.endpoint}{links}"

    def _name(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes) -> None:
        name = self._name(key)
        try:
            self._client.put_object(Bucket=self.bucket, Key=name, Body=data)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"cannot write result {key} to {self.location}: {_reason(exc)}") from exc

    @contextlib.contextmanager
    def writer(self, key: str) -> Iterator[BinaryIO]:
        name = self._name(key)
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
            try:
                yield cast(BinaryIO, spool)  # a binary file in all but its declared type
                # Only reached when the block ended without an exception: upload then, so a
                # failed or cancelled write never leaves a partial object behind.
                spool.seek(0)
                # upload_fileobj streams it, in parts for large files, never whole in memory.
                self._client.upload_fileobj(spool, self.bucket, name)
            except (BotoCoreError, ClientError, Boto3Error) as exc:
                raise StorageError(f"cannot write result {key} to {self.location}: {_reason(exc)}") from exc
            except OSError as exc:  # the temporary file could not be written (disk full) or read back
                raise StorageError(f"cannot write result {key}: {exc.strerror or exc}") from exc

    def get(self, key: str) -> bytes:
        name = self._name(key)
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=name)
            with contextlib.closing(response["Body"]) as body:
                return bytes(body.read())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _NOT_FOUND:
                raise KeyError(key) from exc
            raise StorageError(f"cannot read result {key} from {self.location}: {_reason(exc)}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"cannot read result {key} from {self.location}: {_reason(exc)}") from exc

    def _names_under(self, name: str) -> list[str]:
        """``name`` itself and every object under ``name/`` (never ``name2/...``)."""
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=name + "/", PaginationConfig={"PageSize": LIST_PAGE})
        return [name] + [obj["Key"] for page in pages for obj in page.get("Contents", [])]

    def delete_prefix(self, prefix: str) -> None:
        name = self._name(prefix)
        try:
            # Listed in full before deleting, so no server's continuation token can skip an
            # object when what it lists shrinks; a task folder holds a few dozen at most.
            # Deleting an absent object succeeds in S3, so ``name`` goes in unconditionally.
            for chunk in _chunks(self._names_under(name), DELETE_BATCH):
                response = self._client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True})
                if errors := response.get("Errors"):  # per-object failures do not raise
                    first = errors[0]
                    raise StorageError(f"cannot delete results under {prefix} in {self.location}: "
                                       f"{len(errors)} failed, first {first.get('Key')}: {first.get('Code')}: "
                                       f"{first.get('Message')}")
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"cannot delete results under {prefix} in {self.location}: {_reason(exc)}") from exc

    def link(self, key: str, expires: int) -> str:
        """A presigned GET URL valid until ``expires`` (Unix seconds), at least 1 s and at
        most a week from now (the longest SigV4 allows)."""
        name = self._name(key)
        seconds = min(MAX_LINK_SECONDS, max(1, int(expires) - int(time.time())))
        try:
            return str(self._link_client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": name}, ExpiresIn=seconds))
        except (BotoCoreError, ClientError) as exc:  # e.g. no credentials to sign with
            raise StorageError(f"cannot make a link to result {key} in {self.location}: {_reason(exc)}") from exc
