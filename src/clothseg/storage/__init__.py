"""Result storage (masks, ZIPs, uploaded inputs) and signed, expiring links."""

from clothseg.storage.base import ResultStore, StorageError
from clothseg.storage.local import LocalResultStore
from clothseg.storage.signing import LinkSigner

__all__ = ["LinkSigner", "LocalResultStore", "ResultStore", "StorageError"]
