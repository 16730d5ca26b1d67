"""Test images made from one committed CCP photo, in every accepted format."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def dng(rgb: np.ndarray, mono: bool = False) -> bytes:
    """A camera-raw DNG of ``rgb``, written by pidng: a 12-bit RGGB Bayer mosaic, or with
    ``mono`` one linear gray channel (which LibRaw decodes to an (H, W, 1) array)."""
    from pidng.core import RAW2DNG, DNGTags, Tag
    from pidng.defs import CalibrationIlluminant, CFAPattern, DNGVersion, Orientation, PhotometricInterpretation

    h, w = (rgb.shape[0] // 2) * 2, (rgb.shape[1] // 2) * 2
    img = rgb[:h, :w].astype(np.uint16) * 16
    if mono:
        raw = img.mean(axis=2).astype(np.uint16)
        layout = [(Tag.PhotometricInterpretation, PhotometricInterpretation.Linear_Raw)]
    else:
        raw = np.zeros((h, w), np.uint16)
        raw[0::2, 0::2] = img[0::2, 0::2, 0]
        raw[0::2, 1::2] = img[0::2, 1::2, 1]
        raw[1::2, 0::2] = img[1::2, 0::2, 1]
        raw[1::2, 1::2] = img[1::2, 1::2, 2]
        layout = [(Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array),
                  (Tag.CFARepeatPatternDim, [2, 2]), (Tag.CFAPattern, CFAPattern.RGGB)]
    t = DNGTags()
    for tag, value in (
        (Tag.ImageWidth, w), (Tag.ImageLength, h), (Tag.TileWidth, w), (Tag.TileLength, h),
        (Tag.Orientation, Orientation.Horizontal), *layout,
        (Tag.SamplesPerPixel, 1), (Tag.BitsPerSample, 16), (Tag.BlackLevel, 0), (Tag.WhiteLevel, 4095),
        (Tag.ColorMatrix1, [[1, 1], [0, 1], [0, 1], [0, 1], [1, 1], [0, 1], [0, 1], [0, 1], [1, 1]]),
        (Tag.CalibrationIlluminant1, CalibrationIlluminant.D65), (Tag.AsShotNeutral, [[1, 1], [1, 1], [1, 1]]),
        (Tag.BaselineExposure, [[0, 100]]), (Tag.Make, "clothseg"), (Tag.Model, "test"),
        (Tag.DNGVersion, DNGVersion.V1_4), (Tag.DNGBackwardVersion, DNGVersion.V1_2),
    ):
        t.set(tag, value)
    with tempfile.TemporaryDirectory() as d:
        conv = RAW2DNG()
        conv.options(t, path="", compress=False)
        conv.convert(raw, filename=str(Path(d) / "photo"))
        return (Path(d) / "photo.dng").read_bytes()


def all_formats(photo: bytes) -> dict[str, bytes]:
    """name -> encoded bytes of the same photo."""
    rgb_img = Image.open(io.BytesIO(photo)).convert("RGB")
    rgba = rgb_img.copy()
    rgba.putalpha(Image.new("L", rgb_img.size, 255))
    gray16 = Image.fromarray(np.asarray(rgb_img.convert("L"), np.uint16) * 257)
    return {
        "jpeg": photo,
        "png-rgba": encode(rgba, "PNG"),
        "png-palette": encode(rgb_img.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        "png-gray": encode(rgb_img.convert("L"), "PNG"),
        "png-16bit": encode(gray16, "PNG"),
        "jpeg-cmyk": encode(rgb_img.convert("CMYK"), "JPEG"),
        "bmp": encode(rgb_img, "BMP"),
        "webp": encode(rgb_img, "WEBP"),
        "tiff-lzw": encode(rgb_img, "TIFF", compression="tiff_lzw"),
        "sgi-rgb": encode(rgb_img, "SGI"),
        "dng-raw": dng(np.asarray(rgb_img)),
    }
