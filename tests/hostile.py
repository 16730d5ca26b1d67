"""Unusual and damaged image files, the same for a given seed: the fuzz test
(tests/test_fuzz.py) and the memory benchmark (benchmarks/memory.py) send them.

Every documented format in unusual modes (1- and 16-bit, 32-bit float, CMYK,
Lab, palette with transparency, alpha, animated, camera raw incl. a
one-channel DNG), each then truncated, padded with garbage and bit-flipped;
headers that declare huge images; and plain garbage behind each format's magic.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Callable

import numpy as np
from images import dng, encode
from PIL import Image

MAGICS = {"png": b"\x89PNG\r\n\x1a\n", "jpeg": b"\xff\xd8\xff\xe0", "gif": b"GIF89a", "bmp": b"BM",
          "tiff": b"II*\x00", "webp": b"RIFF\x00\x00\x00\x00WEBPVP8 ", "sgi": b"\x01\xda\x01\x01"}
HUGE = 100_000


def unusual_images(photo: Image.Image) -> dict[str, bytes]:
    """name -> a valid file of ``photo`` (a small RGB image) in an unusual format or mode."""
    rgba = photo.copy()
    rgba.putalpha(Image.new("L", photo.size, 128))
    gray = photo.convert("L")
    gray16 = Image.fromarray(np.asarray(gray, np.uint16) * 257)
    palette = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    frames = [photo, photo.rotate(90), photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    exif = Image.Exif()
    exif[0x0112] = 6
    out = {
        "png-1bit": encode(photo.convert("1"), "PNG"),
        "png-gray": encode(gray, "PNG"),
        "png-gray-alpha": encode(rgba.convert("LA"), "PNG"),
        "png-palette-transparent": encode(palette, "PNG", transparency=0),
        "png-rgba": encode(rgba, "PNG"),
        "png-16bit": encode(gray16, "PNG"),
        "png-animated": encode(frames[0], "PNG", save_all=True, append_images=frames[1:]),
        "jpeg-gray": encode(gray, "JPEG"),
        "jpeg-cmyk": encode(photo.convert("CMYK"), "JPEG"),
        "jpeg-progressive-exif": encode(photo, "JPEG", progressive=True, exif=exif),
        "tiff-1bit": encode(photo.convert("1"), "TIFF", compression="group4"),
        "tiff-cmyk": encode(photo.convert("CMYK"), "TIFF"),
        "tiff-lab": encode(photo.convert("LAB"), "TIFF"),
        "tiff-16bit": encode(gray16, "TIFF", compression="tiff_lzw"),
        "tiff-float": encode(Image.fromarray(np.asarray(gray, np.float32) / 255 - 0.5), "TIFF"),
        "tiff-rgba-deflate": encode(rgba, "TIFF", compression="tiff_adobe_deflate"),
        "tiff-ycbcr-jpeg": encode(photo, "TIFF", compression="jpeg"),
        "bmp-1bit": encode(photo.convert("1"), "BMP"),
        "bmp-palette": encode(palette, "BMP"),
        "bmp-rgba": encode(rgba, "BMP"),
        "webp-rgba": encode(rgba, "WEBP"),
        "webp-lossless": encode(photo, "WEBP", lossless=True),
        "webp-animated": encode(frames[0], "WEBP", save_all=True, append_images=frames[1:]),
        "gif-animated": encode(palette, "GIF", save_all=True, append_images=[f.convert("P") for f in frames[1:]]),
        "sgi-gray": encode(gray, "SGI"),
        "sgi-rgba": encode(rgba, "SGI"),
        "dng-bayer": dng(np.asarray(photo)),
        "dng-mono": dng(np.asarray(photo), mono=True),
    }
    return out


def _png_with_size(data: bytes, width: int, height: int) -> bytes:
    ihdr = struct.pack(">II", width, height) + data[24:29]
    return data[:16] + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + data[33:]


def _patch(data: bytes, offset: int, fmt: str, *values: int) -> bytes:
    return data[:offset] + struct.pack(fmt, *values) + data[offset + struct.calcsize(fmt):]


def _jpeg_with_size(data: bytes, width: int, height: int) -> bytes:
    sof = data.find(b"\xff\xc0")
    return _patch(data, sof + 5, ">HH", height, width)


def huge_declared(files: dict[str, bytes]) -> dict[str, bytes]:
    """Small files whose headers declare huge (or zero) sizes."""
    png, bmp, gif, sgi = files["png-gray"], encode(Image.open(io.BytesIO(files["bmp-rgba"])), "BMP"), \
        files["gif-animated"], files["sgi-gray"]
    jpeg = encode(Image.open(io.BytesIO(files["jpeg-gray"])), "JPEG")
    return {
        "huge-png": _png_with_size(png, HUGE, HUGE),
        "huge-png-one-side": _png_with_size(png, 1, HUGE),
        "huge-png-4096-square-truncated": _png_with_size(png, 4096, 4096),
        "zero-png": _png_with_size(png, 0, 0),
        "huge-bmp": _patch(bmp, 18, "<ii", HUGE, HUGE),
        "huge-bmp-negative": _patch(bmp, 18, "<ii", -HUGE, -HUGE),
        "huge-gif": _patch(gif, 6, "<HH", 65535, 65535),
        "huge-sgi": _patch(sgi, 6, ">HH", 65535, 65535),
        "huge-jpeg": _jpeg_with_size(jpeg, 65535, 65535),
        "zero-jpeg": _jpeg_with_size(jpeg, 0, 0),
    }


def _mutations(rng: random.Random) -> dict[str, Callable[[bytes], bytes]]:
    def flip(data: bytes, first: int, last: int, count: int) -> bytes:
        out = bytearray(data)
        for _ in range(count):
            out[rng.randrange(first, min(last, len(out)))] ^= 1 << rng.randrange(8)
        return bytes(out)

    return {
        "truncated-header": lambda d: d[:rng.randrange(1, min(64, len(d)))],
        "truncated": lambda d: d[:rng.randrange(len(d) // 10, len(d) - 1)],
        "garbage-after": lambda d: d + rng.randbytes(rng.randrange(1, 4096)),
        "header-flips": lambda d: flip(d, 0, 64, rng.randrange(1, 4)),
        "body-flips": lambda d: flip(d, 0, len(d), rng.randrange(1, 40)),
    }


def hostile_inputs(photo: Image.Image, seed: int = 0) -> list[tuple[str, bytes]]:
    """(name, bytes) of about three hundred files, the same for the same seed."""
    rng = random.Random(seed)
    files = unusual_images(photo)
    out = list(files.items()) + list(huge_declared(files).items())
    mutations = _mutations(rng)
    for name, data in files.items():
        out += [(f"{name}-{kind}", mutate(data)) for kind, mutate in mutations.items()]
        out += [(f"{name}-{kind}-2", mutations[kind](data)) for kind in ("truncated", "header-flips", "body-flips")]
    for fmt, magic in MAGICS.items():
        out += [(f"garbage-{fmt}-{i}", magic + rng.randbytes(rng.randrange(0, 3000))) for i in range(3)]
    out += [(f"garbage-{i}", rng.randbytes(rng.randrange(1, 3000))) for i in range(5)]
    return out
