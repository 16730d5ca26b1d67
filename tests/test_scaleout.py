"""The scale-out under load and faults: API nodes and Celery workers on real
PostgreSQL, Redis, RabbitMQ and an S3 endpoint (moto's server over HTTP)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest
import redis

from tests.conftest import Server
from tests.deployment import RABBITMQ_URL, Deployment, link_endpoint
from tests.faults import CuttableRelay
from tests.services import REDIS_URL


def balance(server: Server, key: str) -> dict:
    return server.http.get("/api/account", headers={"X-API-KEY": key}).json()["data"]


def tasks_in(database: str) -> dict[str, tuple[int, int]]:
    """Each task's (state, attempts), read from PostgreSQL itself."""
    with psycopg.connect(database) as conn:
        return {r[0]: (r[1], r[2]) for r in conn.execute("SELECT id, state, attempts FROM tasks")}


def segment_once_it_recovers(deployment: Deployment, key: str, photo: bytes) -> int:
    """The state of the first sync task the deployment accepts again, within 30 s."""
    deadline = time.monotonic() + 30
    while (resp := deployment.create(key, {"sync": 1}, photo)).status_code != 200:
        assert time.monotonic() < deadline, resp.text
        time.sleep(1)
    return resp.json()["data"]["state"]


@pytest.fixture(scope="module")
def s3_deployment(tmp_path_factory: pytest.TempPathFactory, host: str) -> Iterator[Deployment]:
    """Two API nodes, two workers, a Redis broker and results in an S3 bucket;
    image URLs may point at the test host."""
    deployment = Deployment(tmp_path_factory.mktemp("scaleout"), {"CLOTHSEG_URL_ALLOWLIST": host.removeprefix("http://")},
                            broker="redis", storage="s3").start()
    yield deployment
    deployment.close()


def test_results_live_in_the_bucket_behind_presigned_links(s3_deployment: Deployment, photo: bytes) -> None:
    key = s3_deployment.make_key()
    body = s3_deployment.create(key, {"sync": 1, "output_type": 3}, photo).json()
    assert body["data"]["state"] == 1, body
    link = next(iter(body["data"]["class_masks"].values()))
    # Signed for the endpoint clients reach (CLOTHSEG_STORAGE_LINK_ENDPOINT), not the workers' one.
    assert link.startswith(link_endpoint(os.environ["AWS_ENDPOINT_URL"]) + "/") and "X-Amz-Expires" in link
    assert httpx.get(link).content.startswith(b"\x89PNG")
    assert httpx.get(body["data"]["clothes_masks"]).content.startswith(b"PK")


def test_an_image_url_is_downloaded_into_the_bucket_and_segmented(s3_deployment: Deployment, host: str) -> None:
    key = s3_deployment.make_key()
    body = s3_deployment.create(key, {"sync": 1, "image_url": f"{host}/photo.jpg"}).json()
    assert body["data"]["state"] == 1, body
    assert httpx.get(next(iter(body["data"]["class_masks"].values()))).content.startswith(b"\x89PNG")


def test_a_hundred_concurrent_tasks_across_both_nodes_all_succeed_charged_once(
        s3_deployment: Deployment, photo: bytes) -> None:
    key = s3_deployment.make_key(credits=1000, qps=1000)
    with ThreadPoolExecutor(16) as pool:
        created = list(pool.map(lambda _: s3_deployment.create(key, {"sync": 0}, photo).json(), range(100)))
    ids = [c["data"]["task_id"] for c in created]
    assert len(set(ids)) == 100
    with ThreadPoolExecutor(8) as pool:
        states = list(pool.map(lambda t: s3_deployment.wait(key, t, timeout=300)["data"]["state"], ids))
    assert states == [1] * 100
    assert balance(s3_deployment, key) == {**balance(s3_deployment, key), "credits": 700, "held": 0}
    # Both workers took a share (the queue is shared), and each logged JSON only.
    for log in s3_deployment.worker_logs:
        lines = log.read_text().splitlines()
        assert sum('"task finished"' in line for line in lines) > 0
        assert all(json.loads(line) for line in lines)


def test_a_worker_killed_holding_tasks_loses_none_and_charges_none_twice(
        s3_deployment: Deployment, photo: bytes) -> None:
    key = s3_deployment.make_key(credits=90, qps=1000)
    ids = [s3_deployment.create(key, {"sync": 0, "quality": 2}, photo).json()["data"]["task_id"]
           for _ in range(30)]
    victim = s3_deployment.workers[0]
    deadline = time.monotonic() + 60
    # Each worker runs one task at a time: once as many tasks are processing as there
    # are workers, the victim holds one (with one processing, it may be the other's).
    while sum(state == 4 for state, _ in tasks_in(s3_deployment.database).values()) < len(s3_deployment.workers):
        assert time.monotonic() < deadline, "the workers did not all reach processing"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    try:
        ends = [s3_deployment.wait(key, t, timeout=300)["data"]["state"] for t in ids]
        assert set(ends) <= {1, -13}, ends  # each re-run elsewhere, or cancelled after the attempt limit
        assert balance(s3_deployment, key)["credits"] == 90 - 3 * ends.count(1)
        assert balance(s3_deployment, key)["held"] == 0
        attempts = [a for t, (_, a) in tasks_in(s3_deployment.database).items() if t in ids]
        assert max(attempts) == 2  # the killed worker's tasks ran again
    finally:
        s3_deployment.start_worker(replacing=0)


def test_healthz_counts_live_workers_and_fails_with_none(s3_deployment: Deployment) -> None:
    def health_once_workers_are(count: int) -> httpx.Response:
        deadline = time.monotonic() + 15  # a killed worker's report expires after one lease (3 s here)
        while True:
            answer = s3_deployment.http.get("/healthz")
            if answer.status_code == 200 and answer.json()["data"]["workers"] == count or (
                    count == 0 and answer.status_code == 500):
                return answer
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.2)

    assert health_once_workers_are(2).json()["data"]["components"]["workers"] == "ok"
    try:
        for victim in s3_deployment.workers:
            victim.send_signal(signal.SIGKILL)
            victim.wait()
        assert "workers: none alive" in health_once_workers_are(0).json()["message"]
    finally:
        for i in range(len(s3_deployment.workers)):
            s3_deployment.start_worker(replacing=i, wait=False)
        s3_deployment.wait_for_workers()
    assert health_once_workers_are(2).json()["data"]["components"]["workers"] == "ok"


def test_restarting_an_api_node_leaves_tasks_that_live_workers_run_alone(
        s3_deployment: Deployment, photo: bytes) -> None:
    key = s3_deployment.make_key(qps=1000)
    ids = [s3_deployment.create(key, {"sync": 0, "quality": 2, "detail_mode": 2}, photo).json()["data"]["task_id"]
           for _ in range(6)]
    node = s3_deployment.nodes[0]
    node.stop()
    node.start()
    assert [s3_deployment.wait(key, t, timeout=300)["data"]["state"] for t in ids] == [1] * 6
    assert {tasks_in(s3_deployment.database)[t][1] for t in ids} == {1}  # each ran once


def test_a_worker_that_cannot_write_results_ends_the_task_minus_2_free(tmp_path: Path, photo: bytes) -> None:
    deployment = Deployment(tmp_path, {}, broker="redis", workers=1).start()
    try:
        key = deployment.make_key(credits=3)
        worker = deployment.workers[0]
        worker.send_signal(signal.SIGSTOP)  # so the obstacle is in place before it starts
        try:
            task_id = deployment.create(key, {"sync": 0}, photo).json()["data"]["task_id"]
            (tmp_path / "node0" / "results" / task_id).write_text("a file where the task's results go")
        finally:
            worker.send_signal(signal.SIGCONT)
        done = deployment.wait(key, task_id)
        assert done["data"]["state"] == -2 and "storing the result failed" in done["message"]
        assert balance(deployment, key)["credits"] == 3 and balance(deployment, key)["held"] == 0
    finally:
        deployment.close()


def test_broker_down_fails_creates_fast_free_and_recovers_by_itself(tmp_path: Path, photo: bytes) -> None:
    # The API node reaches RabbitMQ through a relay the test cuts; the worker directly.
    relay = CuttableRelay(("127.0.0.1", 5672)).restore()
    deployment = Deployment(tmp_path, {}, broker="amqp", nodes=1, workers=1)
    deployment.nodes[0].env["CLOTHSEG_BROKER_URL"] = RABBITMQ_URL.replace(":5672", f":{relay.port}")
    deployment.start()
    try:
        key = deployment.make_key(credits=30)
        assert deployment.create(key, {"sync": 1}, photo).json()["data"]["state"] == 1
        relay.cut()
        started = time.monotonic()
        resp = deployment.create(key, {"sync": 1}, photo)
        assert time.monotonic() - started < 10
        assert resp.status_code == 500 and "broker" in resp.json()["message"]
        health = deployment.http.get("/healthz")
        assert health.status_code == 500 and "queue" in health.json()["message"]
        assert balance(deployment, key) == {**balance(deployment, key), "credits": 27, "held": 0}
        relay.restore()
        assert segment_once_it_recovers(deployment, key, photo) == 1
        assert deployment.http.get("/healthz").status_code == 200
    finally:
        relay.cut()
        deployment.close()


def test_a_database_restart_is_survived(tmp_path: Path, photo: bytes) -> None:
    """Every process reaches PostgreSQL through a relay; cutting it drops every
    connection, as a restart does."""
    relay = CuttableRelay(("127.0.0.1", 5432)).restore()
    deployment = Deployment(tmp_path, {}, broker="redis", nodes=1, workers=1)
    deployment.env["CLOTHSEG_DATABASE_URL"] = deployment.database.replace(":5432", f":{relay.port}")
    deployment.nodes[0].env.update(CLOTHSEG_DATABASE_URL=deployment.env["CLOTHSEG_DATABASE_URL"])
    deployment.start()
    try:
        key = deployment.make_key(credits=30)
        assert deployment.create(key, {"sync": 1}, photo).json()["data"]["state"] == 1
        relay.cut()
        resp = deployment.create(key, {"sync": 1}, photo)
        assert resp.status_code in (401, 500) and "message" in resp.json()  # the envelope, not a trace
        relay.restore()
        assert segment_once_it_recovers(deployment, key, photo) == 1
        assert balance(deployment, key) == {**balance(deployment, key), "credits": 24, "held": 0}
    finally:
        relay.cut()
        deployment.close()


def test_workers_serve_prometheus_metrics(s3_deployment: Deployment, photo: bytes) -> None:
    key = s3_deployment.make_key()
    s3_deployment.create(key, {"sync": 1}, photo)
    ports = [int(json.loads(line)["metrics_port"]) for log in s3_deployment.worker_logs
             for line in log.read_text().splitlines() if '"worker ready"' in line]
    texts = [httpx.get(f"http://127.0.0.1:{port}/metrics").text for port in ports]
    assert all("clothseg_task_seconds_bucket" in t and "clothseg_queue_depth" in t for t in texts)
    assert sum(float(line.split()[-1]) for t in texts for line in t.splitlines()
               if line.startswith("clothseg_task_seconds_count")) > 0


def test_a_task_whose_queue_message_is_lost_is_sent_again(tmp_path: Path, photo: bytes) -> None:
    """A broker restarted without its data loses the queue: the task is sent again
    once its queue lease (the task timeout) runs out, and still ends."""
    deployment = Deployment(tmp_path, {"CLOTHSEG_TASK_TIMEOUT": "6"}, broker="redis", nodes=1, workers=1).start()
    try:
        key = deployment.make_key(credits=3)
        worker = deployment.workers[0]
        worker.kill()  # no consumer: the message stays in the queue, where it is lost
        worker.wait()
        task_id = deployment.create(key, {"sync": 0}, photo).json()["data"]["task_id"]
        queue = redis.Redis.from_url(REDIS_URL)
        assert queue.delete(deployment.queue) == 1
        deployment.start_worker(replacing=0)
        assert deployment.wait(key, task_id, timeout=60)["data"]["state"] == 1
        assert balance(deployment, key) == {**balance(deployment, key), "credits": 0, "held": 0}
    finally:
        deployment.close()
