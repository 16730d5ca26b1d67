"""Backend selection from a model spec string ``[kind:]path``."""

from __future__ import annotations

from pathlib import Path

from clothseg.engine.core import Backend
from clothseg.engine.onnx_backend import (
    BLUR_MODEL,
    CUT_MODEL,
    DEFAULT_MODEL,
    GRAY_MODEL,
    OnnxParsingBackend,
    Specialist,
)

KINDS = ("clothseg", "segformer", "schp-lip", "schp-atr", "schp-pascal")


def make_backend(model: str | None, threads: int = 0) -> Backend:
    if not model:
        return OnnxParsingBackend(DEFAULT_MODEL, threads, gray_path=GRAY_MODEL,
                                  specialists={"blurred": Specialist(BLUR_MODEL),
                                               "headless": Specialist(CUT_MODEL, blended=True)})
    kind, sep, path = model.partition(":")
    if not sep or kind not in KINDS:  # a bare path
        kind, path = "clothseg", model
    if kind == "clothseg":
        return OnnxParsingBackend(Path(path), threads)
    if kind == "segformer":
        from clothseg.engine.adapters import SegformerBackend

        return SegformerBackend(Path(path), threads)
    from clothseg.engine.adapters import SchpOnnxBackend

    return SchpOnnxBackend(Path(path), kind.removeprefix("schp-"), threads)
