"""The response envelope ``{"status", "message", "data"}``; HTTP code == status."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi.responses import JSONResponse


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def envelope(status: int, message: str, data: dict[str, Any] | None = None,
             headers: Mapping[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"status": status, "message": message}
    if data is not None:
        body["data"] = data
    return JSONResponse(body, status_code=status, headers=headers)
