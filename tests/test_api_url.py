"""End-to-end: image_url downloads, their limits and the private-network guard."""

from __future__ import annotations

import time

import pytest
from conftest import MB, Server, ServerFactory, wait_running


@pytest.fixture(scope="module")
def url_server(server_factory: ServerFactory, host: str) -> Server:
    # The test host is on loopback: the operator allow-list must name it (and port 9, where nothing listens).
    return server_factory(url_allowlist=f"{host.removeprefix('http://')},127.0.0.1:9", max_url_bytes=str(MB),
                          url_read_timeout="1", url_timeout="2", url_max_redirects="3")


@pytest.fixture(scope="module")
def url_key(url_server: Server) -> str:
    return url_server.make_key()


def run(server: Server, key: str, url: str) -> dict:
    resp = server.create(key, {"sync": 1, "image_url": url, "class_type": 3})
    assert resp.status_code == 200
    return resp.json()


def test_image_url_is_downloaded_and_segmented(url_server: Server, url_key: str, host: str) -> None:
    body = run(url_server, url_key, f"{host}/photo.jpg")
    assert body["data"]["state"] == 1 and set(body["data"]["class_masks"]) == {"hair", "face", "head", "body"}


def test_redirects_are_followed_up_to_the_limit(url_server: Server, url_key: str, host: str) -> None:
    assert run(url_server, url_key, f"{host}/redirect/3")["data"]["state"] == 1
    body = run(url_server, url_key, f"{host}/redirect/5")
    assert body["data"]["state"] == -3 and "redirected more than 3" in body["message"]


@pytest.mark.parametrize(
    ("path", "state", "words"),
    [
        ("/missing", -3, "HTTP 404"),
        ("/big", -5, "larger than"),
        ("/big-chunked", -5, "larger than"),
        ("/slow", -3, "timed out"),
        ("/trickle", -3, "longer than 2 seconds"),
        ("/text", -7, "not a decodable image"),
        ("/to-metadata", -3, "non-public"),
    ],
)
def test_failed_downloads_end_the_task(url_server: Server, url_key: str, host: str,
                                       path: str, state: int, words: str) -> None:
    body = run(url_server, url_key, host + path)
    assert body["status"] == 200 and body["data"]["state"] == state, body
    assert words in body["message"]


def test_unreachable_host_is_minus_3(url_server: Server, url_key: str) -> None:
    body = run(url_server, url_key, "http://127.0.0.1:9/photo.jpg")  # discard port: nothing listens
    assert body["data"]["state"] == -3 and "non-public" not in body["message"]


def test_allow_list_opens_one_port_not_the_host(url_server: Server, url_key: str) -> None:
    """Allowing the test image server on 127.0.0.1 does not let image_url reach the API there."""
    body = run(url_server, url_key, f"{url_server.base_url}/healthz")
    assert body["data"]["state"] == -3 and "non-public" in body["message"]


def test_a_network_in_the_allow_list_stops_the_server_with_a_message(server_factory: ServerFactory) -> None:
    srv = server_factory(start=False, url_allowlist="127.0.0.0/8")
    with pytest.raises(RuntimeError, match="server exited"):
        srv.start()
    deadline = time.monotonic() + 10
    while "entries are host:port" not in srv.log.read_text():  # the log relay may finish just after
        assert time.monotonic() < deadline, srv.log.read_text()
        time.sleep(0.1)
    assert "invalid configuration" in srv.log.read_text()


def test_slow_download_times_out_without_delaying_uploads(server_factory: ServerFactory, host: str,
                                                          photo: bytes) -> None:
    """A trickling image_url ends -8 at the task's deadline, and an upload sent after
    it is processed meanwhile: downloads never hold a worker."""
    srv = server_factory(url_allowlist=host.removeprefix("http://"), task_timeout="4", workers="1")
    key = srv.make_key()
    slow = srv.create(key, {"image_url": f"{host}/trickle"}).json()["data"]["task_id"]
    upload = srv.create(key, {"sync": 1}, photo).json()["data"]
    assert upload["state"] == 1
    assert srv.task(key, slow).json()["data"]["state"] == 2  # still downloading
    body = srv.wait(key, slow)
    assert body["data"]["state"] == -8 and "timed out" in body["message"]
    data = body["data"]
    assert int(data["completed_at"]) - int(data["processed_at"]) <= 4 + 2  # ended at its deadline


def test_a_download_interrupted_too_often_ends_cancelled_and_free(server_factory: ServerFactory, host: str) -> None:
    """A restart during an image_url download is a start of the task, as one during
    processing is: after CLOTHSEG_MAX_ATTEMPTS the task ends -13 and costs nothing."""
    srv = server_factory(url_allowlist=host.removeprefix("http://"), max_attempts="1")
    key = srv.make_key(credits=3)
    task_id = srv.create(key, {"image_url": f"{host}/trickle"}).json()["data"]["task_id"]
    wait_running(srv, key, task_id)  # downloading: a trickling URL never finishes before the kill
    srv.stop(kill=True)
    srv.start()
    body = srv.wait(key, task_id)
    assert body["data"]["state"] == -13 and "interrupted" in body["message"]
    assert run(srv, key, f"{host}/photo.jpg")["data"]["state"] == 1  # the 3 credits pay for a new task


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{port}/photo.jpg", "http://[::1]:{port}/photo.jpg", "http://10.0.0.1/photo.jpg",
    "http://169.254.169.254/", "http://224.0.0.1/", "http://0.0.0.0/", "http://100.64.0.1/", "http://[::]/",
    "http://[fe80::1]/", "http://[fc00::1]/", "http://[ff02::1]/",
    # IPv6 that carries 127.0.0.1 or 10.0.0.1: IPv4-mapped and -compatible, 6to4, NAT64, local NAT64, Teredo.
    "http://[::ffff:127.0.0.1]:{port}/", "http://[::7f00:1]:{port}/", "http://[2002:7f00:1::]:{port}/",
    "http://[64:ff9b::a00:1]/", "http://[64:ff9b:1::a00:1]/", "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
])
def test_private_addresses_are_refused_without_allow_list(server: Server, key: str, host: str, url: str) -> None:
    port = host.rsplit(":", 1)[1]
    body = run(server, key, url.format(port=port))
    assert body["data"]["state"] == -3 and "non-public" in body["message"]


def test_failed_download_costs_no_credit(url_server: Server, host: str) -> None:
    key = url_server.make_key(credits=3)
    assert run(url_server, key, f"{host}/missing")["data"]["state"] == -3
    assert run(url_server, key, f"{host}/photo.jpg")["data"]["state"] == 1
