"""The scale-out as an operator runs it, on this machine: API nodes and
``clothseg worker`` processes sharing a PostgreSQL database, Redis, a broker
(Redis or RabbitMQ) and a results store (a shared folder or an S3 bucket on
moto's server).  Each deployment has a database, key prefix and queue of its
own, removed afterwards, so test runs can go side by side.

``Deployment`` answers like ``conftest.Server``: one base URL whose requests
go to the API nodes in turn, so the API tests run against it unchanged.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import redis
from kombu import Connection

from tests.conftest import Server, free_port
from tests.services import REDIS_URL, _wait, moto_s3, postgres_database, redis_prefix

RABBITMQ_URL = os.environ.get("CLOTHSEG_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672//")
BROKERS = ("redis", "amqp")


def _rabbitmq_ready() -> bool:
    try:
        with Connection(RABBITMQ_URL, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1)
        return True
    except Exception:
        return False


class RoundRobin(httpx.HTTPTransport):
    """Sends each request to the next API node's port."""

    def __init__(self, ports: list[int]) -> None:
        super().__init__()
        self._ports = itertools.cycle(ports)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(port=next(self._ports))
        return super().handle_request(request)


def link_endpoint(endpoint: str) -> str:
    """The S3 endpoint under the name clients use in these tests."""
    return endpoint.replace("127.0.0.1", "localhost")


class Deployment(Server):
    """``nodes`` API nodes and ``workers`` workers; ``env`` as for a Server (CLOTHSEG_* names)."""

    def __init__(self, root: Path, env: dict[str, str], broker: str = "redis", storage: str = "file",
                 nodes: int = 2, workers: int = 2) -> None:
        self._infra = contextlib.ExitStack()
        self.database = self._infra.enter_context(postgres_database())
        self.prefix = self._infra.enter_context(redis_prefix())
        self.queue = f"{self.prefix}tasks"
        if broker == "amqp":
            _wait(_rabbitmq_ready, [["rabbitmq-server", "-detached"]], "RabbitMQ")
            self.broker_url = RABBITMQ_URL
        else:
            self.broker_url = REDIS_URL
        self._infra.callback(self._delete_queue)
        # Node 0's data dir holds the shared results folder, where tests that
        # obstruct a Server's results folder look for it.
        storage_url = f"file://{root / 'node0' / 'results'}"
        if storage == "s3":
            endpoint = self._infra.enter_context(moto_s3())
            bucket = f"clothseg-test-{uuid.uuid4().hex[:8]}"
            import boto3

            boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
            # Links name the server as clients reach it (localhost), uploads go to 127.0.0.1.
            env = {"AWS_ENDPOINT_URL": endpoint, "CLOTHSEG_STORAGE_LINK_ENDPOINT": link_endpoint(endpoint), **env}
            storage_url = f"s3://{bucket}/results"
        shared = {
            "CLOTHSEG_DATABASE_URL": self.database, "CLOTHSEG_REDIS_URL": REDIS_URL,
            "CLOTHSEG_REDIS_PREFIX": self.prefix, "CLOTHSEG_BROKER_URL": self.broker_url,
            "CLOTHSEG_QUEUE": self.queue, "CLOTHSEG_STORAGE_URL": storage_url,
            "CLOTHSEG_LEASE_SECONDS": "3", "CLOTHSEG_ENGINE_THREADS": "1", **env,
        }
        super().__init__(root / "node0", shared)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.nodes = [Server(root / f"node{i}", shared) for i in range(nodes)]
        for node in self.nodes:
            node.data_dir.mkdir(parents=True, exist_ok=True)
        self.workers: list[subprocess.Popen[bytes]] = []
        self.worker_logs: list[Path] = []
        self._worker_count = workers
        self._started_workers = 0
        self.port = self.nodes[0].port
        self.base_url = self.nodes[0].base_url
        self.http = httpx.Client(base_url=self.base_url, timeout=120,
                                 transport=RoundRobin([n.port for n in self.nodes]))
        self.log = root / "deployment.log"

    def _delete_queue(self) -> None:
        if self.broker_url.startswith("amqp"):
            with contextlib.suppress(Exception), Connection(self.broker_url, connect_timeout=2) as conn:
                conn.default_channel.queue_delete(self.queue)
        else:  # kombu's binding keys carry the queue's name, so the prefix
            client = redis.Redis.from_url(REDIS_URL)
            for key in client.scan_iter(match=f"*{self.prefix}*"):
                client.delete(key)

    def start_worker(self, replacing: int | None = None, wait: bool = True) -> None:
        """A new worker process (in the place of worker ``replacing``, killed if alive;
        then, with ``wait``, until every worker is ready)."""
        name = f"worker{self._started_workers}"
        self._started_workers += 1
        log_path = self.data_dir.parent / f"{name}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "clothseg.cli", "worker", "--data-dir", str(self.data_dir.parent / name),
                 "--metrics-port", str(free_port())],
                env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )
        if replacing is None:
            self.workers.append(proc)
            self.worker_logs.append(log_path)
            return
        old = self.workers[replacing]
        if old.poll() is None:
            old.kill()
            old.wait()
        self.workers[replacing], self.worker_logs[replacing] = proc, log_path
        if wait:
            self.wait_for_workers()

    def start(self) -> Deployment:
        self.cli("db", "upgrade")
        self.workers, self.worker_logs = [], []
        for _ in range(self._worker_count):
            self.start_worker()
        for node in self.nodes:
            node.start()
        self.wait_for_workers()
        return self

    def wait_for_workers(self) -> None:
        """Until every worker has loaded its model and listens (its log says it is ready)."""
        deadline = time.monotonic() + 120
        logs = self.worker_logs
        while time.monotonic() < deadline:
            for proc, log in zip(self.workers, logs, strict=True):
                if proc.poll() is not None:
                    raise RuntimeError(f"worker exited: {log.read_text()[-3000:]}")
            if all(log.exists() and "worker ready" in log.read_text() for log in logs):
                time.sleep(1.0)  # from "ready" to consuming
                return
            time.sleep(0.2)
        raise RuntimeError("workers did not start")

    def stop(self, kill: bool = False) -> None:
        """Every process; the database, queue and bucket stay for a restart."""
        for node in self.nodes:
            node.stop(kill)
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
                proc.wait(timeout=60)

    def close(self) -> None:
        self.stop(kill=True)
        self._infra.close()
