"""Choosing the result store from CLOTHSEG_STORAGE_URL: a (shared) folder or an S3-compatible bucket."""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

from clothseg.storage.base import ResultStore
from clothseg.storage.local import LocalResultStore

FORMS = "file:///absolute/folder (a folder, shared by every node) or s3://bucket[/prefix] (an S3-compatible bucket)"
# Lenient enough for the S3-compatible servers that allow more than AWS does, strict
# enough to refuse user:password@host:port and other things that are not a bucket.
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class StorageURL(NamedTuple):
    """A parsed CLOTHSEG_STORAGE_URL: a folder, or a bucket and a prefix ("" for none)."""

    folder: Path | None = None
    bucket: str = ""
    prefix: str = ""


def _refuse(url: str, why: str) -> ValueError:
    return ValueError(f"CLOTHSEG_STORAGE_URL={url!r} is not usable ({why}); use {FORMS}")


def parse_storage_url(url: str, default_root: Path) -> StorageURL:
    """Check ``url`` without touching the disk or the network; ValueError says what is wrong."""
    if not url.strip():
        return StorageURL(folder=default_root)
    parts = urlsplit(url.strip())
    if parts.query or parts.fragment:
        raise _refuse(url, "a query or fragment means nothing here")
    if parts.scheme == "file":
        if parts.netloc:
            raise _refuse(url, f"a file URL names no host, found {parts.netloc!r}; note the three slashes")
        path = Path(unquote(parts.path))
        if not path.is_absolute():
            raise _refuse(url, "the folder must be an absolute path")
        return StorageURL(folder=path)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise _refuse(url, "no bucket")
        if not _BUCKET.match(parts.netloc):
            raise _refuse(url, f"{parts.netloc!r} is not a bucket name; the endpoint goes in AWS_ENDPOINT_URL")
        prefix = unquote(parts.path).strip("/")
        if prefix and any(seg in ("", ".", "..") for seg in prefix.split("/")):
            raise _refuse(url, "the prefix has an empty, '.' or '..' segment")
        return StorageURL(bucket=parts.netloc, prefix=prefix)
    if not parts.scheme:
        hint = f"; write it as {Path(url.strip()).as_uri()}" if Path(url.strip()).is_absolute() else ""
        raise _refuse(url, f"a bare path, not a URL{hint}")
    raise _refuse(url, f"unknown scheme {parts.scheme!r}")


def check_link_endpoint(endpoint: str, storage_url: str) -> None:
    """ValueError unless CLOTHSEG_STORAGE_LINK_ENDPOINT ``endpoint`` is empty, or an
    http(s) URL beside s3:// storage."""
    if not endpoint:
        return
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"CLOTHSEG_STORAGE_LINK_ENDPOINT must be an http(s) URL such as "
                         f"https://files.example.com, got {endpoint!r}")
    if urlsplit(storage_url.strip()).scheme != "s3":
        raise ValueError("CLOTHSEG_STORAGE_LINK_ENDPOINT names where clients reach an S3 bucket; it needs "
                         "CLOTHSEG_STORAGE_URL=s3://bucket[/prefix] (results on disk are served by the API)")


def open_store(url: str, default_root: Path, link_endpoint: str = "") -> ResultStore:
    """The store CLOTHSEG_STORAGE_URL names: "" for ``default_root`` on this machine's disk,
    ``file:///path`` for a folder, ``s3://bucket[/prefix]`` for a bucket, its links
    pointing to ``link_endpoint`` if given; ValueError otherwise."""
    where = parse_storage_url(url, default_root)
    check_link_endpoint(link_endpoint, url)
    if where.folder is not None:
        return LocalResultStore(where.folder)
    # Imported here so that deployments on local disk never load boto3 (a quarter second).
    from clothseg.storage.s3 import S3ResultStore, make_client

    return S3ResultStore(where.bucket, where.prefix,
                         link_client=make_client(link_endpoint) if link_endpoint else None)


def describe_store(url: str, default_root: Path, link_endpoint: str = "") -> str:
    """One line for the start-up log: the folder, or the bucket, prefix and endpoint(s)."""
    store = open_store(url, default_root, link_endpoint)
    if isinstance(store, LocalResultStore):
        return f"folder {store.root}"
    return repr(store)  # s3://bucket/prefix at https://endpoint
