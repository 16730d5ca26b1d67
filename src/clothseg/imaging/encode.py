"""Mask encoding: 8-bit grayscale PNG, tuned for speed.

Masks are mostly long runs of 0 and 255: zlib level 1 with run-length strategy
and no PNG row filter encodes twelve 1024 px masks in ~13 ms (vs ~55 ms with
OpenCV's defaults at level 1), for files about twice as large (~13 kB each).
"""

from __future__ import annotations

import io
import json
import zipfile

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


def clothing_zip(masks: dict[str, np.ndarray]) -> bytes:
    """ZIP of one PNG per clothing category plus manifest.json."""
    buf = io.BytesIO()
    manifest = []
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:  # PNGs are compressed already
        for name, mask in masks.items():
            zf.writestr(f"{name}.png", encode_png(mask))
            ys, xs = np.nonzero(mask >= 128)
            bbox = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if len(xs) else None
            manifest.append({"category": name, "file": f"{name}.png", "area": int(len(xs)), "bbox": bbox})
        zf.writestr("manifest.json", json.dumps({"categories": manifest}, indent=2))
    return buf.getvalue()


def encode_results(class_masks: dict[str, np.ndarray], clothing_masks: dict[str, np.ndarray],
                   with_zip: bool) -> tuple[dict[str, bytes], bytes | None]:
    """(class -> PNG bytes, the clothing ZIP or None): what a finished task delivers."""
    pngs = {name: encode_png(mask) for name, mask in class_masks.items()}
    return pngs, clothing_zip(clothing_masks) if with_zip else None
