"""Mask encoding: 8-bit grayscale PNG, low compression level for speed."""

from __future__ import annotations

import cv2
import numpy as np

PNG_COMPRESSION = 1  # zlib level: ~5x faster than the default 6, files ~15% larger


def encode_png(mask: np.ndarray) -> bytes:
    """PNG bytes of a (H, W) uint8 mask."""
    ok, buf = cv2.imencode(".png", mask, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()
