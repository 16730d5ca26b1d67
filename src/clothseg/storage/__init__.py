"""Result storage (masks, ZIPs, uploaded inputs) and signed, expiring links."""

from clothseg.storage.base import ResultStore, StorageError
from clothseg.storage.local import LocalResultStore
from clothseg.storage.signing import LinkSigner
from clothseg.storage.urls import describe_store, open_store

# S3ResultStore lives in clothseg.storage.s3, imported only when a bucket is configured.
__all__ = ["LinkSigner", "LocalResultStore", "ResultStore", "StorageError", "describe_store", "open_store"]
