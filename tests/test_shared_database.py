"""Several API nodes on one PostgreSQL database and one Redis (real servers, over HTTP):
keys and tasks live in PostgreSQL, the QPS limit and the credits hold across nodes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from tests.conftest import TASKS, Server, ServerFactory, free_port
from tests.services import postgres_database, redis_prefix


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with postgres_database() as url:
        # As an operator does: the shared schema is upgraded once, before the nodes (which refuse it otherwise).
        subprocess.run([sys.executable, "-m", "clothseg.cli", "db", "upgrade"],
                       env={**os.environ, "CLOTHSEG_DATABASE_URL": url}, capture_output=True, text=True,
                       check=True, timeout=120)
        yield url


@pytest.fixture(scope="module")
def prefix() -> Iterator[str]:
    with redis_prefix() as p:
        yield p


@pytest.fixture(scope="module")
def nodes(server_factory: ServerFactory, tmp_path_factory: pytest.TempPathFactory, database: str,
          prefix: str) -> list[Server]:
    """Two API nodes on different ports sharing the database, Redis and one results folder."""
    shared = tmp_path_factory.mktemp("shared")
    return [server_factory(shared, database_url=database, redis_url="redis://127.0.0.1:6379/0",
                           redis_prefix=prefix) for _ in range(2)]


def credits_in_postgres(database: str, key: str) -> tuple[int, int]:
    with psycopg.connect(database) as conn:
        row = conn.execute("SELECT credits, reserved FROM api_keys WHERE prefix = %s", (key[:10],)).fetchone()
    assert row is not None, "the key is not in PostgreSQL"
    return row[0], row[1]


def test_keys_and_tasks_live_in_postgresql(nodes: list[Server], database: str, photo: bytes) -> None:
    key = nodes[0].make_key(credits=30)  # `clothseg keys create` honours CLOTHSEG_DATABASE_URL
    assert credits_in_postgres(database, key) == (30, 0)
    body = nodes[0].create(key, {"sync": 1, "class_type": 4}, photo).json()
    assert body["data"]["state"] == 1
    # The other node answers for the same task and serves its links.
    again = nodes[1].task(key, body["data"]["task_id"]).json()
    assert again["data"]["state"] == 1
    link = again["data"]["class_masks"]["clothes"].replace(nodes[0].base_url, nodes[1].base_url)
    assert nodes[1].http.get(link).headers["content-type"] == "image/png"
    assert credits_in_postgres(database, key) == (27, 0)
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT state FROM tasks WHERE id = %s", (body["data"]["task_id"],)).fetchone() == (1,)


def test_a_qps_limit_holds_across_nodes(nodes: list[Server]) -> None:
    key = nodes[0].make_key(qps=2)
    # Empty forms: the limiter answers before the form is read, so each is 400 (allowed) or 429.
    with ThreadPoolExecutor(12) as pool:
        started = time.monotonic()
        codes = list(pool.map(lambda i: nodes[i % 2].http.post(TASKS, headers={"X-API-KEY": key}).status_code,
                              range(12)))
        elapsed = time.monotonic() - started
    allowed = codes.count(400)
    assert codes.count(429) + allowed == 12
    # One bucket of 2, refilled at 2 a second while the burst lasted; two in-process buckets would allow 4+.
    assert 2 <= allowed <= 2 + int(elapsed * 2), (codes, elapsed)


def test_credits_are_never_overdrawn_across_nodes(nodes: list[Server], database: str, photo: bytes) -> None:
    key = nodes[0].make_key(credits=9, qps=1000)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: nodes[i % 2].create(key, {"sync": 0}, photo), range(8)))
    accepted = [a.json()["data"]["task_id"] for a in answers if a.status_code == 200]
    assert len(accepted) == 3 and sorted(a.status_code for a in answers) == [200] * 3 + [402] * 5
    for i, task_id in enumerate(accepted):
        assert nodes[i % 2].wait(key, task_id)["data"]["state"] == 1
    assert credits_in_postgres(database, key) == (0, 0)


def test_healthz_reports_each_shared_component(nodes: list[Server]) -> None:
    for node in nodes:
        body = node.http.get("/healthz").json()
        assert body["status"] == 200
        assert body["data"]["components"] == {"database": "ok", "qps_limiter": "ok", "storage": "ok", "queue": "ok"}


def test_with_redis_down_healthz_and_creates_say_so_and_hold_no_credit(
        server_factory: ServerFactory, tmp_path: Path, database: str, photo: bytes) -> None:
    node = server_factory(tmp_path, database_url=database, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    health = node.http.get("/healthz")
    assert health.status_code == 500 and "qps_limiter" in health.json()["message"]
    key = node.make_key(credits=30)
    answer = node.create(key, {"sync": 0}, photo)
    assert answer.status_code == 500 and "Redis is unreachable" in answer.json()["message"]
    assert credits_in_postgres(database, key) == (30, 0)


@pytest.mark.parametrize(("env", "words"), [
    ({"redis_url": "redis://127.0.0.1:6379/0"}, "also need one database"),
    ({"broker_url": "redis://127.0.0.1:6379/1"}, "CLOTHSEG_BROKER_URL runs tasks on workers"),
    ({"broker_url": "kafka://127.0.0.1:9092"}, "must be redis://... or amqp://"),
    ({"storage_url": "ftp://files/results"}, "CLOTHSEG_STORAGE_URL"),
    ({"storage_link_endpoint": "https://files.example.com"}, "it needs CLOTHSEG_STORAGE_URL=s3://"),
])
def test_a_half_configured_setup_is_refused_with_a_message(server_factory: ServerFactory, tmp_path: Path,
                                                           env: dict[str, str], words: str) -> None:
    srv = server_factory(tmp_path, start=False, **env)
    with pytest.raises(RuntimeError, match="server exited"):
        srv.start()
    deadline = time.monotonic() + 10
    while words not in srv.log.read_text():  # the log relay may finish just after
        assert time.monotonic() < deadline, srv.log.read_text()
        time.sleep(0.1)
    assert "invalid configuration" in srv.log.read_text()
