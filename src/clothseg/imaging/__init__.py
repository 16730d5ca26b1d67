"""Imaging I/O: decoding uploads, fetching image URLs safely, encoding masks."""

from clothseg.imaging.decode import ImageTooLarge, InvalidImage, decode_image
from clothseg.imaging.encode import encode_png
from clothseg.imaging.fetch import DownloadFailed, DownloadTooLarge, fetch_url

__all__ = [
    "DownloadFailed", "DownloadTooLarge", "ImageTooLarge", "InvalidImage",
    "decode_image", "encode_png", "fetch_url",
]
