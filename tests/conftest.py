"""Fixtures that run the real server (``clothseg serve``) in a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

DATA = Path(__file__).parent / "data"
CCP = DATA / "ccp"
PHOTO = CCP / "photos" / "0040.jpg"
TASKS = "/api/tasks/visual/clothing-segmentation"
MB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One ``clothseg serve`` process on a free port with its own data dir."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.env = {**os.environ, "CLOTHSEG_SWEEP_INTERVAL": "1", **env}
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.base_url, timeout=120)
        self.log = data_dir / "server.log"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "clothseg.cli", *args, "--data-dir", str(self.data_dir)],
            env=self.env, capture_output=True, text=True, check=True, timeout=120,
        )

    def make_key(self, credits: int = 1000, qps: float = 100) -> str:
        out = self.cli("keys", "create", "--credits", str(credits), "--qps", str(qps)).stdout
        return out.strip().splitlines()[-1]

    def start(self) -> Server:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "clothseg.cli", "serve", "--port", str(self.port),
                 "--data-dir", str(self.data_dir)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                # Answering at all is ready; a 500 names a shared component that is down.
                if self.http.get("/healthz").status_code in (200, 500):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not start")

    def stop(self, kill: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            self.proc.wait(timeout=30)

    def close(self) -> None:
        """Stop for good (a deployment also drops its database and queue)."""
        self.stop(kill=True)

    # -- API helpers --------------------------------------------------------------
    def create(self, key: str, data: dict[str, str] | None = None,
               image: bytes | None = None, filename: str = "photo.jpg") -> httpx.Response:
        files = {"image_file": (filename, image, "application/octet-stream")} if image is not None else None
        return self.http.post(TASKS, headers={"X-API-KEY": key}, data=data or {}, files=files)

    def task(self, key: str, task_id: str) -> httpx.Response:
        return self.http.get(f"{TASKS}/{task_id}", headers={"X-API-KEY": key})

    def wait(self, key: str, task_id: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = self.task(key, task_id).json()
            if body["data"]["state"] == 1 or body["data"]["state"] < 0:
                return body
            time.sleep(0.1)
        raise AssertionError(f"task {task_id} did not finish")


ServerFactory = Callable[..., Server]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test module naming ``TOPOLOGIES`` (e.g. ("embedded", "redis", "amqp")) runs once
    against each: the embedded server, or a scale-out deployment with that broker."""
    topologies = getattr(metafunc.module, "TOPOLOGIES", None)
    if topologies and "server_factory" in metafunc.fixturenames:
        metafunc.parametrize("server_factory", topologies, indirect=True, scope="module")


@pytest.fixture(scope="module")
def server_factory(request: pytest.FixtureRequest,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    topology = getattr(request, "param", "embedded")
    started: list[Server] = []

    def make(data_dir: Path | None = None, start: bool = True, **env: str) -> Server:
        d = data_dir or tmp_path_factory.mktemp("clothseg")
        settings = {f"CLOTHSEG_{k.upper()}": v for k, v in env.items()}
        if topology == "embedded":
            srv = Server(d, settings)
        else:
            from tests.deployment import Deployment

            srv = Deployment(d, settings, broker=topology)
        started.append(srv)
        return srv.start() if start else srv

    yield make
    for srv in started:
        srv.close()


@pytest.fixture(scope="module")
def server(server_factory: ServerFactory) -> Server:
    """A server with default settings, shared by a test module."""
    return server_factory()


@pytest.fixture(scope="module")
def key(server: Server) -> str:
    return server.make_key(credits=100000, qps=1000)


@pytest.fixture(scope="session")
def photo() -> bytes:
    return PHOTO.read_bytes()


class ImageHost(BaseHTTPRequestHandler):
    """Serves the test photo and the awkward cases an image URL can be."""

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if "Transfer-Encoding" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        path = self.path
        if path == "/photo.jpg":
            self._send(200, PHOTO.read_bytes(), {"Content-Type": "image/jpeg"})
        elif path.startswith("/redirect/"):
            n = int(path.rsplit("/", 1)[1])
            self._send(302, headers={"Location": "/photo.jpg" if n <= 1 else f"/redirect/{n - 1}"})
        elif path == "/to-metadata":
            self._send(302, headers={"Location": "http://169.254.169.254/latest/meta-data"})
        elif path == "/big":
            self._send(200, b"\xff" * (2 * MB))
        elif path == "/big-chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = b"\xff" * 65536
            for _ in range(40):  # 2.5 MB, never announced
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/slow":
            time.sleep(3)
            self._send(200, PHOTO.read_bytes())
        elif path == "/trickle":  # a byte every half second: no single read ever times out
            body = PHOTO.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                for i in range(len(body)):
                    self.wfile.write(body[i:i + 1])
                    time.sleep(0.5)
            except OSError:  # the server gave up on this download
                pass
        elif path == "/text":
            self._send(200, b"<html>hello</html>", {"Content-Type": "text/html"})
        else:
            self._send(404, b"not found")


@pytest.fixture(scope="module")
def host() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ImageHost)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def wait_running(srv: Server, key: str, task_id: str) -> None:
    """Until the task is being worked on (downloading, or a worker has it)."""
    deadline = time.monotonic() + 60
    while srv.task(key, task_id).json()["data"]["state"] not in (2, 4, 5):
        assert time.monotonic() < deadline
        time.sleep(0.02)
