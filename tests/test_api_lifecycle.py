"""End-to-end: restarts lose nothing, results expire, keys are managed by the CLI."""

from __future__ import annotations

import json
import time

import httpx
from conftest import ServerFactory, wait_running

SLOW = {"quality": "2", "detail_mode": "2", "class_type": "4"}


def test_queued_and_interrupted_tasks_survive_a_crash(server_factory: ServerFactory, photo: bytes) -> None:
    srv = server_factory(workers="1")
    key = srv.make_key()
    ids = [srv.create(key, SLOW, photo).json()["data"]["task_id"] for _ in range(3)]
    wait_running(srv, key, ids[0])
    srv.stop(kill=True)  # SIGKILL: no chance to clean up
    srv.start()
    for task_id in ids:
        assert srv.wait(key, task_id)["data"]["state"] == 1


def test_task_interrupted_too_often_ends_cancelled_and_free(server_factory: ServerFactory, photo: bytes) -> None:
    srv = server_factory(max_attempts="1")
    key = srv.make_key(credits=3)
    task_id = srv.create(key, SLOW, photo).json()["data"]["task_id"]
    wait_running(srv, key, task_id)
    srv.stop(kill=True)
    srv.start()
    body = srv.wait(key, task_id)
    assert body["data"]["state"] == -13 and "interrupted" in body["message"]
    # The hold was released and nothing charged: the 3 credits pay for a new task.
    assert srv.create(key, {"sync": 1}, photo).json()["data"]["state"] == 1


def test_links_and_tasks_expire_and_are_swept(server_factory: ServerFactory, photo: bytes) -> None:
    srv = server_factory(result_ttl="2")
    key = srv.make_key()
    data = srv.create(key, {"sync": 1, "class_type": 3}, photo).json()["data"]
    url = data["class_masks"]["hair"]
    expires = int(url.split("expires=")[1].split("&")[0])
    assert expires == int(float(data["completed_at"]) + 2) or expires == int(data["completed_at"]) + 3
    assert httpx.get(url).status_code == 200
    time.sleep(4.5)
    resp = httpx.get(url)
    assert resp.status_code == 404 and "expired" in resp.json()["message"]
    assert srv.task(key, data["task_id"]).status_code == 404  # the record was purged
    assert not (srv.data_dir / "results" / data["task_id"]).exists()


def test_expiry_is_one_moment_for_links_task_and_caches(server_factory: ServerFactory, photo: bytes) -> None:
    """When the links expire the task is gone too, whenever the sweeper runs; and no
    cache may keep a result longer than its link works."""
    srv = server_factory(result_ttl="3", sweep_interval="3600")
    key = srv.make_key()
    data = srv.create(key, {"sync": 1, "class_type": 3}, photo).json()["data"]
    url = data["class_masks"]["hair"]
    expires = int(url.split("expires=")[1].split("&")[0])
    resp = httpx.get(url)
    assert resp.status_code == 200
    max_age = int(resp.headers["cache-control"].split("max-age=")[1])
    assert 0 <= max_age <= 3 and time.time() + max_age <= expires + 1
    while time.time() <= expires + 0.5:
        time.sleep(0.25)
    assert httpx.get(url).status_code == 404
    assert srv.task(key, data["task_id"]).status_code == 404  # no dead links are handed out
    assert (srv.data_dir / "results" / data["task_id"]).exists()  # although nothing has been swept yet


def test_serve_creates_a_first_key_on_a_fresh_install(server_factory: ServerFactory, photo: bytes) -> None:
    srv = server_factory()
    records = [json.loads(line) for line in srv.log.read_text().splitlines()]
    key = next(r["api_key"] for r in records if "api_key" in r)
    assert srv.create(key, {"sync": 1}, photo).json()["data"]["state"] == 1


def test_keys_cli_create_list_credit_revoke(server_factory: ServerFactory) -> None:
    srv = server_factory(start=False)
    out = srv.cli("keys", "create", "--credits", "7", "--qps", "3", "--name", "shop").stdout
    key = out.strip().splitlines()[-1]
    assert key.startswith("cs_") and len(key) > 40
    listing = srv.cli("keys", "list").stdout
    assert key[:10] in listing and "shop" in listing and "7" in listing
    assert "now has 17 credits" in srv.cli("keys", "credit", key[:10], "10").stdout
    srv.cli("keys", "revoke", key)
    assert "revoked" in srv.cli("keys", "list").stdout
