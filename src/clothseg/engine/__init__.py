"""Segmentation engine: image + options -> soft masks per API class.

Public surface: ``Engine``, ``SegmentOptions``, ``Segmentation`` and
``load_engine``; the label taxonomy lives in ``clothseg.engine.taxonomy``.
"""

from __future__ import annotations

from clothseg.engine.core import Engine, Segmentation, SegmentOptions


def load_engine(model: str | None = None, threads: int = 0) -> Engine:
    """The engine for ``model``: None for our bundled model, else ``[kind:]path``
    where kind is ``clothseg`` (an ONNX file of ours, the default), ``segformer``
    (a Hugging Face SegFormer folder) or ``schp-lip`` / ``schp-atr`` /
    ``schp-pascal`` (an SCHP ONNX export)."""
    from clothseg.engine.backends import make_backend

    return Engine(make_backend(model, threads))


__all__ = ["Engine", "SegmentOptions", "Segmentation", "load_engine"]
