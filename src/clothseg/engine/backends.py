"""Backend selection from a model spec string."""

from __future__ import annotations

from pathlib import Path

from clothseg.engine.core import Backend
from clothseg.engine.onnx_backend import DEFAULT_MODEL, OnnxParsingBackend


def make_backend(model: str | None, threads: int = 0) -> Backend:
    if not model:
        return OnnxParsingBackend(DEFAULT_MODEL, threads)
    kind, sep, path = model.partition(":")
    if not sep or len(kind) == 1:  # a bare path (or a Windows drive letter)
        kind, path = "clothseg", model
    if kind == "clothseg":
        return OnnxParsingBackend(Path(path), threads)
    raise ValueError(f"unknown model kind {kind!r}")
