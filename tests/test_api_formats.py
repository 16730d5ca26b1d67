"""End-to-end: every documented input format and pixel mode is segmented."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from conftest import PHOTO, Server
from images import all_formats
from PIL import Image

FORMATS = all_formats(PHOTO.read_bytes())


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_format_is_accepted(server: Server, key: str, name: str) -> None:
    data = server.create(key, {"sync": 1, "class_type": 1}, FORMATS[name], filename=f"photo.{name}").json()
    assert data["data"]["state"] == 1, data
    w, h = Image.open(io.BytesIO(FORMATS["jpeg"])).size
    mask = np.asarray(Image.open(io.BytesIO(httpx.get(data["data"]["class_masks"]["clothes"]).content)))
    # Raw demosaicing crops to even dimensions.
    assert abs(mask.shape[0] - h) <= 1 and abs(mask.shape[1] - w) <= 1
    assert (mask > 127).mean() > 0.05
