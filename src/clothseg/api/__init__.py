"""HTTP API (FastAPI): the wire-compatible endpoints, results links and operations."""

from clothseg.api.app import create_app

__all__ = ["create_app"]
