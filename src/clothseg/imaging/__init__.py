"""Imaging I/O: decoding uploads, fetching image URLs safely, encoding masks."""

from clothseg.imaging.decode import ImageTooLarge, InvalidImage, decode_image
from clothseg.imaging.encode import clothing_zip, encode_png, encode_results
from clothseg.imaging.fetch import DownloadFailed, DownloadTooLarge, fetch_url

__all__ = [
    "DownloadFailed", "DownloadTooLarge", "ImageTooLarge", "InvalidImage",
    "clothing_zip", "decode_image", "encode_png", "encode_results", "fetch_url",
]
