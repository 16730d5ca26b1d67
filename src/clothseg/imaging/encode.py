"""Mask encoding: 8-bit grayscale PNG, tuned for speed.

Masks are mostly long runs of 0 and 255: zlib level 1 with run-length strategy
and no PNG row filter encodes twelve 1024 px masks in ~13 ms (vs ~55 ms with
OpenCV's defaults at level 1), for files about twice as large (~13 kB each).
"""

from __future__ import annotations

import cv2
import numpy as np

PNG_PARAMS = [
    cv2.IMWRITE_PNG_COMPRESSION, 1,
    cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE,
    cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE,
]


def encode_png(mask: np.ndarray) -> bytes:
    """PNG bytes of a (H, W) uint8 mask."""
    ok, buf = cv2.imencode(".png", mask, PNG_PARAMS)
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()
