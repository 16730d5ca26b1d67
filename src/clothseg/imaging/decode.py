"""Turn uploaded bytes into an RGB array, whatever the photo's format and mode."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

# Pillow refuses images above this many pixels (decompression bombs).  4096 x 4096
# is the documented maximum; a little slack lets us answer "too large" (-14)
# for honest big photos instead of treating them as bombs.
Image.MAX_IMAGE_PIXELS = 4 * 4096 * 4096


class InvalidImage(ValueError):
    """Not a decodable image (API state -7)."""


class ImageTooLarge(ValueError):
    """Decodable, but beyond the documented maximum side (API state -14)."""


def decode_image(data: bytes, max_side: int = 4096) -> np.ndarray:
    """RGB uint8 array (H, W, 3) of ``data``, EXIF orientation applied.

    Accepts everything Pillow reads (JPEG/JFIF, PNG, BMP, WebP, TIFF incl. LZW,
    SGI .rgb, ...) in any mode (CMYK, 16-bit, palette, alpha, grayscale; alpha
    is composited on white) and camera raw files through rawpy.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            _check_side(img.size, max_side)
            img.load()
    except ImageTooLarge:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"image has too many pixels: {exc}") from exc
    except Exception:  # noqa: BLE001 - not for Pillow: perhaps camera raw
        return _decode_raw(data, max_side)
    if img.format == "TIFF" and _is_raw_tiff(img):
        return _decode_raw(data, max_side)
    return _to_rgb(img)


def _check_side(size: tuple[int, int], max_side: int) -> None:
    if max(size) > max_side:
        raise ImageTooLarge(
            f"image is {size[0]}x{size[1]} px; at most {max_side} px per side is accepted"
        )


def _to_rgb(img: Image.Image) -> np.ndarray:
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16/32-bit grayscale: scale to 8 bit by the image's own range.
        arr = np.asarray(img, dtype=np.float64)
        top = arr.max() or 1.0
        arr = (arr / top * 255).round().astype(np.uint8)
        return np.repeat(arr[:, :, None], 3, axis=2)
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return np.asarray(img.convert("RGB"))


def _is_raw_tiff(img: Image.Image) -> bool:
    """DNG and NEF are TIFF containers; their first IFD is only a thumbnail."""
    tags = getattr(img, "tag_v2", {})
    return 50706 in tags or str(tags.get(271, "")).upper().startswith("NIKON")  # DNGVersion / Make


def _decode_raw(data: bytes, max_side: int) -> np.ndarray:
    import rawpy

    try:
        with rawpy.imread(io.BytesIO(data)) as raw:
            _check_side((raw.sizes.width, raw.sizes.height), max_side)
            return np.ascontiguousarray(raw.postprocess(use_camera_wb=True, output_bps=8))
    except ImageTooLarge:
        raise
    except Exception as exc:  # noqa: BLE001 - neither Pillow nor LibRaw can read it
        raise InvalidImage("the file is not a decodable image") from exc
