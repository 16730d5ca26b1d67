"""End-to-end: every refused request and failing task answers in the API's envelope."""

from __future__ import annotations

import io
import select
import shutil
import socket
import time

import httpx
import numpy as np
import pytest
from conftest import TASKS, Server, ServerFactory
from PIL import Image

# Against the embedded server and the scale-out with each broker (see test_api_tasks).
TOPOLOGIES = ("embedded", "redis", "amqp")


def png(width: int, height: int, color: tuple[int, int, int] = (128, 128, 128)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("data", "with_file", "field"),
    [
        ({}, False, "image_file or image_url"),
        ({"image_url": "http://example.com/a.jpg"}, True, "not both"),
        ({"sync": "2"}, True, "sync"),
        ({"sync": "yes"}, True, "sync"),
        ({"class_type": "5"}, True, "class_type"),
        ({"class_type": "0"}, True, "class_type"),
        ({"output_type": "4"}, True, "output_type"),
        ({"quality": "3"}, True, "quality"),
        ({"detail_mode": "1.5"}, True, "detail_mode"),
        ({"detail_mode": "abc"}, True, "detail_mode"),
        ({"return_base64": "7"}, True, "return_base64"),
        ({"image_url": "ftp://example.com/a.jpg"}, False, "image_url"),
        ({"image_url": "not a url"}, False, "image_url"),
    ],
)
def test_bad_parameters_are_400_naming_the_field(server: Server, key: str, photo: bytes,
                                                  data: dict[str, str], with_file: bool, field: str) -> None:
    resp = server.create(key, data, photo if with_file else None)
    assert resp.status_code == 400
    body = resp.json()
    assert body["status"] == 400 and field in body["message"]


@pytest.mark.parametrize("field", ["class_type", "sync", "image_url"])
def test_a_doubled_field_is_400(server: Server, key: str, photo: bytes, field: str) -> None:
    values = {"image_url": ["http://example.com/a.jpg", "http://example.com/b.jpg"]}.get(field, ["1", "2"])
    files = None if field == "image_url" else {"image_file": ("a.jpg", photo)}
    resp = server.http.post(TASKS, headers={"X-API-KEY": key}, data={field: values}, files=files)
    assert resp.status_code == 400 and f"{field} was sent more than once" in resp.json()["message"]


def test_two_image_files_are_400(server: Server, key: str, photo: bytes) -> None:
    files = [("image_file", ("a.jpg", photo)), ("image_file", ("b.jpg", photo))]
    resp = server.http.post(TASKS, headers={"X-API-KEY": key}, files=files)
    assert resp.status_code == 400 and "image_file was sent more than once" in resp.json()["message"]


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("DELETE", TASKS + "/some-task", "GET"), ("PUT", TASKS, "POST"), ("POST", "/healthz", "GET"),
])
def test_wrong_method_is_405_with_allow(server: Server, method: str, path: str, allow: str) -> None:
    resp = server.http.request(method, path)
    assert resp.status_code == 405 and resp.json()["status"] == 405
    assert resp.headers["allow"] == allow


def test_empty_image_file_is_400(server: Server, key: str) -> None:
    resp = server.create(key, {}, b"")
    assert resp.status_code == 400 and "image_file" in resp.json()["message"]


def test_json_body_is_400(server: Server, key: str) -> None:
    resp = server.http.post(TASKS, headers={"X-API-KEY": key}, json={"image_url": "http://example.com"})
    assert resp.status_code == 400 and resp.json()["status"] == 400


@pytest.mark.parametrize("headers", [{}, {"X-API-KEY": ""}, {"X-API-KEY": "cs_not-a-real-key"}])
def test_missing_or_wrong_key_is_401(server: Server, photo: bytes, headers: dict[str, str]) -> None:
    resp = server.http.post(TASKS, headers=headers, data={"sync": "1"},
                            files={"image_file": ("a.jpg", photo)})
    assert resp.status_code == 401 and resp.json()["status"] == 401
    resp = server.http.get(f"{TASKS}/whatever", headers=headers)
    assert resp.status_code == 401


def test_revoked_key_is_401(server: Server, photo: bytes) -> None:
    revoked = server.make_key()
    assert server.create(revoked, {}, photo).status_code == 200
    server.cli("keys", "revoke", revoked)
    resp = server.create(revoked, {}, photo)
    assert resp.status_code == 401 and "revoked" in resp.json()["message"]


def test_a_key_sees_only_its_own_tasks(server: Server, key: str, photo: bytes) -> None:
    task_id = server.create(key, {}, photo).json()["data"]["task_id"]
    other = server.make_key()
    resp = server.task(other, task_id)
    assert resp.status_code == 404 and resp.json() == {"status": 404, "message": "task not found"}
    assert server.task(key, "00000000-0000-0000-0000-000000000000").status_code == 404
    assert server.task(key, task_id).status_code == 200


def test_unknown_path_is_404_envelope(server: Server) -> None:
    resp = server.http.get("/api/nothing-here")
    assert resp.status_code == 404 and resp.json()["status"] == 404


def test_upload_over_20_mb_is_413(server: Server, key: str) -> None:
    big = b"\xff" * (21 * 1024 * 1024)
    resp = server.create(key, {}, big)
    assert resp.status_code == 413 and resp.json()["status"] == 413


def test_oversized_chunked_upload_is_refused_while_streaming(server: Server, key: str) -> None:
    """No Content-Length: the server counts while reading and answers 413 long
    before the client has finished sending."""
    boundary = "xyzboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image_file\"; "
            f"filename=\"a.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n").encode()
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall((f"POST {TASKS} HTTP/1.1\r\nHost: test\r\nX-API-KEY: {key}\r\n"
                  f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n").encode())
    sock.sendall(b"%x\r\n%s\r\n" % (len(head), head))
    chunk = b"\0" * (1024 * 1024)
    sent_mb, answer = 0, b""
    try:
        while sent_mb < 200 and not answer:
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent_mb += 1
            if select.select([sock], [], [], 0)[0]:
                answer = sock.recv(65536)
        if not answer:
            answer = sock.recv(65536)
    except OSError:  # the server may close the connection once it has answered
        answer = answer or sock.recv(65536)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    assert sent_mb < 40  # refused at ~21 MB, not after the whole 200 MB


def test_qps_limit_is_429(server: Server, photo: bytes) -> None:
    slow = server.make_key(qps=1)
    codes = [server.create(slow, {}, photo).status_code for _ in range(3)]
    assert codes[0] == 200 and 429 in codes
    time.sleep(1.1)
    assert server.create(slow, {}, photo).status_code == 200


def test_credits_charged_only_for_success_and_refused_when_short(server: Server, photo: bytes) -> None:
    poor = server.make_key(credits=3)
    # A failed task (not an image) costs nothing...
    failed = server.create(poor, {"sync": 1}, b"this is not an image").json()
    assert failed["data"]["state"] == -7
    # ...so the 3 credits still pay for one successful task...
    assert server.create(poor, {"sync": 1}, photo).json()["data"]["state"] == 1
    # ...after which the key is refused with 402 before any work is done.
    resp = server.create(poor, {"sync": 1}, photo)
    assert resp.status_code == 402 and "credits" in resp.json()["message"]
    listing = server.cli("keys", "list").stdout
    assert listing
    server.cli("keys", "credit", poor, "3")
    assert server.create(poor, {"sync": 1}, photo).json()["data"]["state"] == 1


def test_credits_are_held_while_a_task_runs(server: Server, photo: bytes) -> None:
    poor = server.make_key(credits=3)
    first = server.create(poor, {"sync": 0}, photo)
    assert first.status_code == 200
    # The only 3 credits are held by the first task: a second one is refused at once.
    assert server.create(poor, {"sync": 0}, photo).status_code == 402
    assert server.wait(poor, first.json()["data"]["task_id"])["data"]["state"] == 1


@pytest.mark.parametrize(
    ("image", "state", "words"),
    [
        (b"GIF89a but not really an image", -7, "not a decodable image"),
        (png(4097, 64), -14, "4096"),
        (png(64, 64), -11, "no person"),
    ],
)
def test_failing_tasks_are_http_200_with_negative_state(server: Server, key: str, image: bytes,
                                                        state: int, words: str) -> None:
    resp = server.create(key, {"sync": 1}, image)
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == 200 and body["data"]["state"] == state
    assert words in body["message"]
    assert "class_masks" not in body["data"]
    assert body["data"]["completed_at"].isdigit()


def test_decompression_bomb_is_refused(server: Server, key: str) -> None:
    # 30000 x 30000 px of one colour compresses to a few hundred kB.
    img = Image.new("1", (30000, 30000))
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=True)
    assert len(buf.getvalue()) < 2 * 1024 * 1024
    body = server.create(key, {"sync": 1}, buf.getvalue()).json()
    assert body["data"]["state"] == -14


def test_timeout_is_state_minus_8(server_factory: ServerFactory, photo: bytes) -> None:
    srv = server_factory(task_timeout="0.05")
    key = srv.make_key()
    body = srv.create(key, {"sync": 1, "quality": 2, "detail_mode": 2}, photo).json()
    assert body["data"]["state"] == -8 and "timed out" in body["message"]


def test_queue_full_is_429_and_nothing_accepted_is_dropped(server_factory: ServerFactory, photo: bytes) -> None:
    srv = server_factory(max_queue="1")
    key = srv.make_key()
    answers = [srv.create(key, {"quality": 2, "detail_mode": 2}, photo) for _ in range(4)]
    codes = [a.status_code for a in answers]
    assert 429 in codes and "queue" in answers[codes.index(429)].json()["message"]
    accepted = [a.json()["data"]["task_id"] for a in answers if a.status_code == 200]
    assert accepted
    for task_id in accepted:
        assert srv.wait(key, task_id)["data"]["state"] == 1


def test_storage_failure_is_state_minus_2_and_free(server_factory: ServerFactory, photo: bytes) -> None:
    srv = server_factory()
    key = srv.make_key(credits=3)
    results = srv.data_dir / "results"
    results.mkdir(exist_ok=True)
    # A file where a task's result folder must go: writes fail even as root.
    body = srv.create(key, {"sync": 0}, photo).json()
    task_id = body["data"]["task_id"]
    (results / task_id).write_text("in the way")
    done = srv.wait(key, task_id)
    if done["data"]["state"] == 1:
        pytest.skip("the task finished before the obstacle was in place")
    assert done["data"]["state"] == -2 and "storing the result failed" in done["message"]
    (results / task_id).unlink(missing_ok=True)
    # No credit was charged: the key can still pay for a task.
    assert srv.create(key, {"sync": 1}, photo).json()["data"]["state"] == 1


def test_exif_orientation_is_applied(server: Server, key: str, photo: bytes) -> None:
    img = Image.open(io.BytesIO(photo))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    rotated_on_disk = img.transpose(Image.Transpose.ROTATE_90)
    buf = io.BytesIO()
    rotated_on_disk.save(buf, "JPEG", exif=exif)
    data = server.create(key, {"sync": 1, "class_type": 3}, buf.getvalue()).json()["data"]
    assert data["state"] == 1
    mask = np.asarray(Image.open(io.BytesIO(httpx.get(data["class_masks"]["hair"]).content)))
    assert mask.shape == (img.height, img.width)  # upright, as displayed


def test_upload_that_cannot_be_stored_is_500_and_holds_no_credit(server_factory: ServerFactory,
                                                                  photo: bytes) -> None:
    srv = server_factory()
    key = srv.make_key(credits=3)
    results = srv.data_dir / "results"
    shutil.rmtree(results, ignore_errors=True)  # /healthz's probe write may have made it
    results.write_text("a file where the results folder should be")
    resp = srv.create(key, {"sync": 1}, photo)
    assert resp.status_code == 500 and "could not store the upload" in resp.json()["message"]
    results.unlink()
    assert srv.create(key, {"sync": 1}, photo).json()["data"]["state"] == 1
