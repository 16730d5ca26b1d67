"""End-to-end: retries with an Idempotency-Key get the first request's task and pay once."""

from __future__ import annotations

import socket
import time
import uuid

import httpx
import pytest
from conftest import TASKS, Server, ServerFactory

# Against the embedded server and the scale-out with each broker (see test_api_tasks).
TOPOLOGIES = ("embedded", "redis", "amqp")

SLOW = {"quality": "2", "detail_mode": "2", "class_type": "4"}


def create(server: Server, key: str, idempotency_key: str, data: dict[str, str], image: bytes,
           timeout: float = 120) -> httpx.Response:
    return server.http.post(TASKS, headers={"X-API-KEY": key, "Idempotency-Key": idempotency_key},
                            data=data, files={"image_file": ("photo.jpg", image)}, timeout=timeout)


def credits(server: Server, key: str) -> int:
    return server.http.get("/api/account", headers={"X-API-KEY": key}).json()["data"]["credits"]


def test_a_retry_returns_the_same_task_and_pays_once(server: Server, photo: bytes) -> None:
    key = server.make_key(credits=30)
    retry_key = str(uuid.uuid4())
    first = create(server, key, retry_key, {"class_type": "3"}, photo).json()["data"]["task_id"]
    # The same request again, framed differently ("3.0" is 3; the multipart boundary differs).
    again = create(server, key, retry_key, {"class_type": "3.0"}, photo).json()["data"]["task_id"]
    assert again == first
    assert server.wait(key, first)["data"]["state"] == 1
    # A sync retry of the finished task answers its result at once.
    body = create(server, key, retry_key, {"class_type": "3", "sync": "1"}, photo).json()
    assert body["data"]["task_id"] == first and body["data"]["state"] == 1 and body["data"]["class_masks"]
    assert credits(server, key) == 27
    # The key belongs to the API key that sent it: another API key starts its own task.
    other = server.make_key()
    assert create(server, other, retry_key, {"class_type": "3"}, photo).json()["data"]["task_id"] != first


def test_the_same_key_with_another_request_is_409(server: Server, key: str, photo: bytes) -> None:
    retry_key = str(uuid.uuid4())
    first = create(server, key, retry_key, {"class_type": "3"}, photo).json()["data"]["task_id"]
    for data, image in (({"class_type": "4"}, photo), ({"class_type": "3"}, photo + b"\0")):
        resp = create(server, key, retry_key, data, image)
        assert resp.status_code == 409, resp.text
        assert resp.json()["status"] == 409 and "Idempotency-Key" in resp.json()["message"]
        assert first in resp.json()["message"]


@pytest.mark.parametrize("value", ["", "x" * 256, "bad key", "clé"])
def test_a_malformed_key_is_400(server: Server, key: str, photo: bytes, value: str) -> None:
    resp = server.http.post(TASKS, headers={"X-API-KEY": key, "Idempotency-Key": value.encode()},
                            files={"image_file": ("photo.jpg", photo)})
    assert resp.status_code == 400 and "Idempotency-Key" in resp.json()["message"]


def test_a_sync_request_cut_off_by_the_network_is_retried_safely(server_factory: ServerFactory,
                                                                photo: bytes) -> None:
    """The connection drops while a sync request waits, the server restarts, and the
    client retries with the same key: it gets the one task's result, charged once."""
    srv = server_factory()
    key = srv.make_key(credits=3)  # enough for one task only
    retry_key = str(uuid.uuid4())
    request = srv.http.build_request("POST", TASKS, headers={"X-API-KEY": key, "Idempotency-Key": retry_key},
                                     data={**SLOW, "sync": "1"}, files={"image_file": ("photo.jpg", photo)})
    head = "".join(f"{name}: {value}\r\n" for name, value in request.headers.items())
    with socket.create_connection(("127.0.0.1", srv.port)) as sock:  # send it all, then hang up
        sock.sendall(f"POST {TASKS} HTTP/1.1\r\n{head}\r\n".encode() + request.read())
        deadline = time.monotonic() + 30
        while srv.http.get("/api/account", headers={"X-API-KEY": key}).json()["data"]["held"] != 3:
            assert time.monotonic() < deadline, "the task was never created"
            time.sleep(0.05)
    srv.stop()
    srv.start()
    body = create(srv, key, retry_key, {**SLOW, "sync": "1"}, photo).json()
    assert body["status"] == 200 and body["data"]["state"] == 1
    task_id = body["data"]["task_id"]
    assert create(srv, key, retry_key, {**SLOW, "sync": "1"}, photo).json()["data"]["task_id"] == task_id
    assert credits(srv, key) == 0
