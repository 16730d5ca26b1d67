"""Validation of the create request's multipart form into a Job.

Numbers may come as strings or numbers (multipart carries text anyway); an
empty value counts as absent, as the spec's "the other image source parameter
must be empty" implies; a field sent twice is refused rather than guessed at.
Every error names the offending field.
"""

from __future__ import annotations

import re

from starlette.datastructures import FormData, UploadFile

from clothseg.api.envelope import ApiError
from clothseg.engine.core import SegmentOptions
from clothseg.imaging.fetch import SPACE, check_url_syntax

# field -> (allowed values, default)
CHOICES: dict[str, tuple[tuple[int, ...], int]] = {
    "sync": ((0, 1), 0),
    "detail_mode": ((1, 2), 1),
    "output_type": ((1, 2, 3), 1),
    "quality": ((1, 2), 1),
    "class_type": ((1, 2, 3, 4), 1),
    "return_base64": ((0, 1), 0),
}
IMAGE_FIELDS = ("image_file", "image_url")
# 1-255 visible ASCII characters (a UUID fits), as the OpenAPI schema publishes it.
IDEMPOTENCY_KEY_PATTERN = "^[!-~]{1,255}$"
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
# A number as text, in ASCII ("3", "3.0", "1.5"; not "1e0" or other scripts' digits).
_NUMBER = re.compile(r"[+-]?[0-9]+(\.[0-9]*)?")


def _choice(form: FormData, field: str) -> int:
    allowed, default = CHOICES[field]
    raw = form.get(field)
    if isinstance(raw, UploadFile):
        raise ApiError(400, f"{field} must be a number, not a file")
    text = (raw or "").strip(SPACE)
    if not text:
        return default
    if not _NUMBER.fullmatch(text):
        raise ApiError(400, f"{field} must be a number, got {raw!r}")
    number = float(text)
    if not number.is_integer() or int(number) not in allowed:
        raise ApiError(400, f"{field} must be one of {', '.join(map(str, allowed))}, got {raw!r}")
    return int(number)


def parse_create_form(form: FormData) -> tuple[UploadFile | None, str | None, SegmentOptions, bool, bool]:
    """(upload, image_url, options, sync, return_base64) or ApiError(400)."""
    for field in (*IMAGE_FIELDS, *CHOICES):
        if len(form.getlist(field)) > 1:
            raise ApiError(400, f"{field} was sent more than once")
    upload = form.get("image_file")
    if isinstance(upload, str):
        if upload.strip():
            raise ApiError(400, "image_file must be sent as a file (multipart file part)")
        upload = None
    url = form.get("image_url")
    if isinstance(url, UploadFile):
        raise ApiError(400, "image_url must be a string, not a file")
    url = (url or "").strip(SPACE) or None
    if upload is not None and url is not None:
        raise ApiError(400, "send either image_file or image_url, not both")
    if upload is None and url is None:
        raise ApiError(400, "one of image_file or image_url is required")
    if url is not None:
        try:
            check_url_syntax(url)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
    values = {f: _choice(form, f) for f in CHOICES}
    options = SegmentOptions(class_type=values["class_type"], quality=values["quality"],
                             detail_mode=values["detail_mode"], output_type=values["output_type"])
    return upload, url, options, bool(values["sync"]), bool(values["return_base64"])


def parse_idempotency_key(value: str | None) -> str | None:
    """The Idempotency-Key header's value, None when absent, or ApiError(400)."""
    if value is None:
        return None
    if not _IDEMPOTENCY_KEY.fullmatch(value):
        raise ApiError(400, "Idempotency-Key must be 1 to 255 visible ASCII characters (a UUID, for example)")
    return value
