"""Turn uploaded bytes into an RGB array, whatever the photo's format and mode.

Every input ends as an (H, W, 3) uint8 array, ImageTooLarge (-14) or
InvalidImage (-7): an unusual file is never an internal error.  Sizes are
checked from the header, before any pixel is decoded, so a small file that
declares a huge image costs no memory.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
from PIL import Image, ImageOps

# Pillow refuses images above twice this many pixels while reading the header
# (decompression bombs); anything over max_side per side is refused right after.
Image.MAX_IMAGE_PIXELS = 4 * 4096 * 4096
# The documented formats (JPEG includes phones' multi-picture MPO; GIF: first frame).
# Pillow's other readers (EPS runs Ghostscript, PSD, ICO, ...) are not exposed to uploads.
FORMATS = ("JPEG", "PNG", "BMP", "DIB", "WEBP", "TIFF", "SGI", "GIF")
# Camera raw sensors are a little larger than the picture they give.
RAW_SENSOR_SLACK = 1.25
# Modes that carry more than 8 bits of one channel.
HIGH_BIT_GRAY = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


class InvalidImage(ValueError):
    """Not a decodable image (API state -7)."""


class ImageTooLarge(ValueError):
    """Decodable, but beyond the documented maximum side (API state -14)."""


def decode_image(data: bytes, max_side: int = 4096) -> np.ndarray:
    """RGB uint8 array (H, W, 3) of ``data``, EXIF orientation applied.

    Reads JPEG/JFIF/MPO, PNG, BMP, WebP, TIFF incl. LZW, SGI .rgb and GIF in any
    mode (CMYK, Lab, 16-bit, 32-bit float, palette, 1-bit, alpha composited on
    white, grayscale; the first frame of an animation) and camera raw files
    through rawpy.
    """
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
        _check_side(img.size, max_side)
        img.load()
    except ImageTooLarge:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"image has too many pixels: {exc}") from exc
    except MemoryError:
        raise
    except Exception:  # noqa: BLE001 - not for Pillow: perhaps camera raw
        return _decode_raw(data, max_side)
    if img.format == "TIFF" and _is_raw_tiff(img):
        return _decode_raw(data, max_side)
    try:
        return _checked(np.asarray(_to_rgb(img)))
    except (ValueError, OSError, TypeError) as exc:  # a mode or palette Pillow cannot convert
        raise InvalidImage(f"the image's pixel format is not supported: {exc}") from exc


def _check_side(size: tuple[int, int], max_side: int) -> None:
    if max(size) > max_side:
        raise ImageTooLarge(
            f"image is {size[0]}x{size[1]} px; at most {max_side} px per side is accepted"
        )


def _to_rgb(img: Image.Image) -> Image.Image:
    with contextlib.suppress(Exception):  # corrupt EXIF: show the pixels as stored
        img = ImageOps.exif_transpose(img)
    if img.mode in HIGH_BIT_GRAY:
        img = _gray_to_8bit(img)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def _gray_to_8bit(img: Image.Image) -> Image.Image:
    """16/32-bit or float grayscale to 8 bit by the image's own range (0 stays black)."""
    arr = np.nan_to_num(np.asarray(img, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    low = min(0.0, float(arr.min()))
    arr -= low
    arr *= 255.0 / (float(arr.max()) or 1.0)
    return Image.fromarray(arr.round().astype(np.uint8))


def _checked(arr: np.ndarray) -> np.ndarray:
    """``arr`` as (H, W, 3) uint8, whatever channel layout a decoder returned."""
    if arr.dtype == np.uint16:
        arr = (arr >> 8).astype(np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.dtype != np.uint8 or 0 in arr.shape or arr.shape[2] not in (1, 3, 4):
        raise InvalidImage(f"the decoder returned an unusable image ({arr.shape}, {arr.dtype})")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3])


def _is_raw_tiff(img: Image.Image) -> bool:
    """DNG and NEF are TIFF containers; their first IFD is only a thumbnail."""
    tags = getattr(img, "tag_v2", {})
    return 50706 in tags or str(tags.get(271, "")).upper().startswith("NIKON")  # DNGVersion / Make


def _decode_raw(data: bytes, max_side: int) -> np.ndarray:
    import rawpy

    try:
        # imread only parses the header; pixels are unpacked by postprocess.
        with rawpy.imread(io.BytesIO(data)) as raw:
            sizes = raw.sizes
            _check_side((sizes.width, sizes.height), max_side)
            if max(sizes.raw_width, sizes.raw_height) > max_side * RAW_SENSOR_SLACK:
                raise ImageTooLarge(f"the raw sensor image is {sizes.raw_width}x{sizes.raw_height} px; "
                                    f"at most {max_side} px per side is accepted")
            return _checked(raw.postprocess(use_camera_wb=True, output_bps=8))
    except (ImageTooLarge, InvalidImage, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - neither Pillow nor LibRaw can read it
        raise InvalidImage("the file is not a decodable image") from exc
