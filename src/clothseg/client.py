"""Python SDK for the Clothing Segmentation API: works against a clothseg server
and against the original commercial service (it speaks only the documented API).

    from clothseg.client import Client
    with Client("http://127.0.0.1:8000", "YOUR_API_KEY") as client:
        result = client.segment("photo.jpg", class_type=4, output_type=3)
        result.save("out/photo")            # hair.png, face.png, ..., clothes.zip
        hair = result.array("hair")         # (H, W) uint8

``segment`` creates the task, polls it (1 s, then 2 s, as the spec recommends),
retries 429 and transient 5xx answers with jittered exponential backoff, raises
a typed error carrying ``status``, ``state`` and ``message``, and downloads all
masks before returning (result links expire after an hour).

The request building, answer parsing and backoff below are shared by the
synchronous and the asynchronous client; only the I/O differs.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

TASKS_PATH = "/api/tasks/visual/clothing-segmentation"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
ZIP_NAME = "clothes.zip"
Source = str | os.PathLike[str] | bytes | IO[bytes]


class ClothsegError(Exception):
    """Any failure; ``status`` is the envelope status, ``state`` the task state (if any)."""

    def __init__(self, message: str, status: int | None = None, state: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.state = state


class RequestRejected(ClothsegError):
    """The server answered a non-200 status (400, 401, 402, 404, 413, 429, 500...)."""


class TaskFailed(ClothsegError):
    """The task ended with a negative state (-3 download failed, -7 invalid image...)."""


class TaskTimeout(ClothsegError):
    """The task did not finish within the client's timeout."""


@dataclass
class SegmentationResult:
    task_id: str
    data: dict[str, Any]
    masks: dict[str, bytes] = field(default_factory=dict)  # class -> PNG bytes
    zip: bytes | None = None

    def image(self, name: str):  # type: ignore[no-untyped-def]
        """The mask of class ``name`` as a PIL image (mode L)."""
        from PIL import Image

        return Image.open(io.BytesIO(self.masks[name]))

    def array(self, name: str):  # type: ignore[no-untyped-def]
        """The mask of class ``name`` as a (H, W) uint8 NumPy array."""
        import numpy as np

        return np.asarray(self.image(name))

    def save(self, directory: str | os.PathLike[str]) -> list[Path]:
        """Write ``<class>.png`` for every mask and ``clothes.zip``; return the paths."""
        return write_outputs(Path(directory), self.masks, self.zip)


def write_outputs(directory: Path, masks: Mapping[str, bytes], zip_bytes: bytes | None) -> list[Path]:
    """The one output layout shared by the SDK and both forms of ``clothseg segment``."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {f"{name}.png": data for name, data in masks.items()}
    if zip_bytes is not None:
        files[ZIP_NAME] = zip_bytes
    paths = []
    for name, data in files.items():
        path = directory / name
        tmp = path.with_name(f".{name}.part")
        tmp.write_bytes(data)
        tmp.replace(path)
        paths.append(path)
    return paths


# -- shared protocol logic ------------------------------------------------------------
def build_request(source: Source, options: Mapping[str, int]) -> tuple[dict[str, str], dict[str, Any] | None]:
    """(form fields, files) for a create request."""
    data = {k: str(v) for k, v in options.items()}
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        return {**data, "image_url": source}, None
    if isinstance(source, bytes):
        return data, {"image_file": ("image", source, "application/octet-stream")}
    if hasattr(source, "read"):
        name = Path(getattr(source, "name", "image")).name
        return data, {"image_file": (name, source.read(), "application/octet-stream")}  # type: ignore[union-attr]
    path = Path(source)  # type: ignore[arg-type]
    return data, {"image_file": (path.name, path.read_bytes(), "application/octet-stream")}


def parse_envelope(resp: httpx.Response) -> tuple[dict[str, Any], str]:
    """(``data``, ``message``) of a 200 answer, else RequestRejected."""
    try:
        body = resp.json()
    except ValueError:
        raise RequestRejected(f"HTTP {resp.status_code}: {resp.text[:200]}", resp.status_code) from None
    status = body.get("status", resp.status_code)
    if resp.status_code != 200 or status != 200:
        raise RequestRejected(body.get("message", f"HTTP {resp.status_code}"), status)
    return body.get("data") or {}, body.get("message", "")


def finished(data: Mapping[str, Any], message: str = "") -> bool:
    """True when the task is done; TaskFailed when it failed."""
    state = int(data.get("state", 0))
    if state < 0:
        raise TaskFailed(message or f"task failed with state {state}", 200, state)
    return state == 1


def retry_delay(attempt: int) -> float:
    """Full-jitter exponential backoff: 0.5 s, 1 s, 2 s, ... (capped at 8 s)."""
    return random.uniform(0, min(8.0, 0.5 * 2**attempt))


def poll_delay(polls: int) -> float:
    return 1.0 if polls < 5 else 2.0


def mask_targets(data: Mapping[str, Any]) -> dict[str, str]:
    """name -> link or base64 of every result (``clothes.zip`` for the ZIP)."""
    targets = {f"{k}.png": v for k, v in (data.get("class_masks") or {}).items()}
    if data.get("clothes_masks"):
        targets[ZIP_NAME] = data["clothes_masks"]
    return targets


def to_result(data: dict[str, Any], contents: Mapping[str, bytes]) -> SegmentationResult:
    masks = {n.removesuffix(".png"): b for n, b in contents.items() if n != ZIP_NAME}
    return SegmentationResult(data["task_id"], data, masks, contents.get(ZIP_NAME))


def is_link(value: str) -> bool:
    return value.startswith(("http://", "https://"))


class _Base:
    def __init__(self, base_url: str, api_key: str, max_retries: int = 5) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"X-API-KEY": api_key}
        self.max_retries = max_retries

    @staticmethod
    def options(class_type: int, output_type: int, quality: int, detail_mode: int, sync: bool) -> dict[str, int]:
        return {"class_type": class_type, "output_type": output_type, "quality": quality,
                "detail_mode": detail_mode, "sync": int(sync)}


class Client(_Base):
    def __init__(self, base_url: str, api_key: str, max_retries: int = 5, http: httpx.Client | None = None) -> None:
        super().__init__(base_url, api_key, max_retries)
        self._http = http or httpx.Client(timeout=httpx.Timeout(60, connect=10))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        for attempt in range(self.max_retries + 1):
            try:
                resp = self._http.request(method, url, headers=self.headers, **kw)
                if resp.status_code not in RETRY_STATUSES or attempt == self.max_retries:
                    return resp
            except httpx.TransportError:
                if attempt == self.max_retries:
                    raise
            time.sleep(retry_delay(attempt))
        raise AssertionError("unreachable")

    def create(self, source: Source, **options: int) -> tuple[dict[str, Any], str]:
        data, files = build_request(source, options)
        return parse_envelope(self._request("POST", self.base_url + TASKS_PATH, data=data, files=files))

    def get(self, task_id: str) -> tuple[dict[str, Any], str]:
        return parse_envelope(self._request("GET", f"{self.base_url}{TASKS_PATH}/{task_id}"))

    def segment(self, source: Source, class_type: int = 1, output_type: int = 1, quality: int = 1,
                detail_mode: int = 1, sync: bool = False, timeout: float = 120) -> SegmentationResult:
        deadline = time.monotonic() + timeout
        data, message = self.create(source, **self.options(class_type, output_type, quality, detail_mode, sync))
        polls = 0
        while "state" not in data or not finished(data, message):
            if time.monotonic() > deadline:
                raise TaskTimeout(f"task {data['task_id']} not finished after {timeout:g} s", 200, data.get("state"))
            time.sleep(poll_delay(polls))
            polls += 1
            data, message = self.get(data["task_id"])
        contents = {n: self._fetch(v) for n, v in mask_targets(data).items()}
        return to_result(data, contents)

    def _fetch(self, value: str) -> bytes:
        if not is_link(value):
            return base64.b64decode(value)
        resp = self._request("GET", value)
        if resp.status_code != 200:
            raise RequestRejected(f"downloading a result failed: HTTP {resp.status_code}", resp.status_code)
        return resp.content


class AsyncClient(_Base):
    def __init__(self, base_url: str, api_key: str, max_retries: int = 5,
                 http: httpx.AsyncClient | None = None) -> None:
        super().__init__(base_url, api_key, max_retries)
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(60, connect=10))

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        for attempt in range(self.max_retries + 1):
            try:
                resp = await self._http.request(method, url, headers=self.headers, **kw)
                if resp.status_code not in RETRY_STATUSES or attempt == self.max_retries:
                    return resp
            except httpx.TransportError:
                if attempt == self.max_retries:
                    raise
            await asyncio.sleep(retry_delay(attempt))
        raise AssertionError("unreachable")

    async def create(self, source: Source, **options: int) -> tuple[dict[str, Any], str]:
        data, files = build_request(source, options)
        return parse_envelope(await self._request("POST", self.base_url + TASKS_PATH, data=data, files=files))

    async def get(self, task_id: str) -> tuple[dict[str, Any], str]:
        return parse_envelope(await self._request("GET", f"{self.base_url}{TASKS_PATH}/{task_id}"))

    async def segment(self, source: Source, class_type: int = 1, output_type: int = 1, quality: int = 1,
                      detail_mode: int = 1, sync: bool = False, timeout: float = 120) -> SegmentationResult:
        deadline = time.monotonic() + timeout
        data, message = await self.create(source, **self.options(class_type, output_type, quality, detail_mode, sync))
        polls = 0
        while "state" not in data or not finished(data, message):
            if time.monotonic() > deadline:
                raise TaskTimeout(f"task {data['task_id']} not finished after {timeout:g} s", 200, data.get("state"))
            await asyncio.sleep(poll_delay(polls))
            polls += 1
            data, message = await self.get(data["task_id"])
        targets = mask_targets(data)
        fetched = await asyncio.gather(*(self._fetch(v) for v in targets.values()))
        return to_result(data, dict(zip(targets, fetched, strict=True)))

    async def _fetch(self, value: str) -> bytes:
        if not is_link(value):
            return base64.b64decode(value)
        resp = await self._request("GET", value)
        if resp.status_code != 200:
            raise RequestRejected(f"downloading a result failed: HTTP {resp.status_code}", resp.status_code)
        return resp.content
