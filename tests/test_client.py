"""The Python SDK against a real server."""

from __future__ import annotations

import asyncio
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import PHOTO, Server, ServerFactory
from PIL import Image

from clothseg.client import AsyncClient, Client, RequestRejected, TaskFailed
from clothseg.engine.taxonomy import CLASS_TYPES

W, H = Image.open(PHOTO).size


@pytest.fixture(scope="module")
def client(server: Server, key: str) -> Client:
    return Client(server.base_url, key)


@pytest.mark.parametrize("kind", ["path", "str-path", "bytes", "file"])
def test_segment_accepts_every_source_kind(client: Client, kind: str) -> None:
    source = {"path": PHOTO, "str-path": str(PHOTO), "bytes": PHOTO.read_bytes()}.get(kind)
    if kind == "file":
        with open(PHOTO, "rb") as f:
            result = client.segment(f, class_type=3)
    else:
        result = client.segment(source, class_type=3)
    assert set(result.masks) == set(CLASS_TYPES[3])
    assert result.data["state"] == 1 and result.zip is None


def test_result_saves_and_opens_masks(client: Client, tmp_path: Path) -> None:
    result = client.segment(PHOTO, class_type=4, output_type=3, sync=True)
    paths = result.save(tmp_path / "out")
    assert sorted(p.name for p in paths) == sorted([f"{c}.png" for c in CLASS_TYPES[4]] + ["clothes.zip"])
    arr = result.array("clothes")
    assert arr.shape == (H, W) and arr.dtype == np.uint8
    assert result.image("hair").mode == "L"
    assert "manifest.json" in zipfile.ZipFile(io.BytesIO(result.zip or b"")).namelist()


def test_failed_task_raises_typed_error(client: Client) -> None:
    with pytest.raises(TaskFailed) as err:
        client.segment(b"definitely not an image")
    assert err.value.state == -7 and err.value.status == 200 and "not a decodable image" in err.value.message


def test_rejected_request_raises_with_status(server: Server) -> None:
    with pytest.raises(RequestRejected) as err:
        Client(server.base_url, "cs_wrong").segment(PHOTO)
    assert err.value.status == 401


def test_qps_limit_is_retried_transparently(server: Server) -> None:
    slow = Client(server.base_url, server.make_key(qps=1))
    results = [slow.segment(PHOTO, class_type=3) for _ in range(3)]  # would be 429 without retries
    assert all(r.data["state"] == 1 for r in results)


def test_async_client_runs_tasks_concurrently(server: Server, key: str) -> None:
    async def main() -> list:
        async with AsyncClient(server.base_url, key) as client:
            return await asyncio.gather(*(client.segment(PHOTO.read_bytes(), class_type=q) for q in (1, 2, 3)))

    results = asyncio.run(main())
    assert [set(r.masks) for r in results] == [set(CLASS_TYPES[q]) for q in (1, 2, 3)]


def test_url_source(server_factory: ServerFactory) -> None:
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kw) -> None:  # type: ignore[no-untyped-def]
            super().__init__(*args, directory=str(PHOTO.parent), **kw)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        srv = server_factory(url_allowlist=f"127.0.0.1:{httpd.server_address[1]}")
        with Client(srv.base_url, srv.make_key()) as c:
            result = c.segment(f"http://127.0.0.1:{httpd.server_address[1]}/{PHOTO.name}", class_type=1)
        assert set(result.masks) == set(CLASS_TYPES[1])
    finally:
        httpd.shutdown()
