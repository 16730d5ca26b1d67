"""PostgreSQL and Redis for the scale-out tests: found on their standard ports, or
started with the commands this kind of machine uses, each test run with a database
and a key prefix of its own that it removes afterwards."""

from __future__ import annotations

import contextlib
import glob
import os
import subprocess
import time
import uuid
from collections.abc import Iterator

import psycopg
import redis

POSTGRES_ADMIN = os.environ.get("CLOTHSEG_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("CLOTHSEG_TEST_REDIS", "redis://127.0.0.1:6379/0")

START_POSTGRES = ["pg_ctlcluster", "--skip-systemctl-redirect", "{version}", "main", "start"]
START_REDIS = ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", "6379", "--save", "",
               "--appendonly", "no"]


def _wait(ready, start: list[list[str]], what: str) -> None:  # type: ignore[no-untyped-def]
    """Return once ``ready()`` holds, running the ``start`` commands once if it does not."""
    if ready():
        return
    for command in start:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(command, capture_output=True, timeout=60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.5)
    raise RuntimeError(f"{what} is not running on its standard port and could not be started")


def _postgres_ready() -> bool:
    try:
        with psycopg.connect(POSTGRES_ADMIN, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def _redis_ready() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped on exit."""
    versions = [os.path.basename(p) for p in glob.glob("/etc/postgresql/*")]
    _wait(_postgres_ready, [[a.format(version=v) for a in START_POSTGRES] for v in versions], "PostgreSQL")
    name = f"clothseg_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def redis_prefix() -> Iterator[str]:
    """A key prefix of its own in the local Redis; its keys are deleted on exit."""
    _wait(_redis_ready, [START_REDIS], "Redis")
    prefix = f"clothseg-test-{uuid.uuid4().hex[:12]}:"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(match=prefix + "*"):
            client.delete(key)


# moto's standalone server, run through moto.server.main as `python -m moto.server` would be,
# with one addition: it serves a presigned URL long after X-Amz-Date + X-Amz-Expires (moto 5
# checks no expiry), while S3 refuses it with 403 "Request has expired"; this wrapper does
# what S3 does, so that tests can see a link expire.
_MOTO_SERVER = '''
import calendar, sys, time
from urllib.parse import parse_qs
import moto.server

class RefuseExpiredLinks:
    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        query = parse_qs(environ.get("QUERY_STRING", ""))
        if "X-Amz-Date" in query and "X-Amz-Expires" in query:
            signed = calendar.timegm(time.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ"))
            if time.time() > signed + int(query["X-Amz-Expires"][0]):
                body = b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
                start_response("403 Forbidden", [("Content-Type", "application/xml"),
                                                 ("Content-Length", str(len(body)))])
                return [body]
        return self.app(environ, start_response)

dispatcher = moto.server.DomainDispatcherApplication
moto.server.DomainDispatcherApplication = lambda *a, **kw: RefuseExpiredLinks(dispatcher(*a, **kw))
moto.server.main(sys.argv[1:])
'''

# Set while moto_s3() runs; the rest is removed so that no real profile, endpoint or
# ~/.aws file of the machine's can send a test anywhere else.
_AWS_SET = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/nonexistent/aws-config",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials"}
_AWS_UNSET = ["AWS_ENDPOINT_URL_S3", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
              "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"]


@contextlib.contextmanager
def moto_s3() -> Iterator[str]:
    """The endpoint URL of a fresh moto S3 server on a free local port, killed on exit.

    While it runs, os.environ points boto3 at it (AWS_ENDPOINT_URL) with fake credentials
    and a region, so ``open_store("s3://bucket")`` and servers started meanwhile use it."""
    import socket
    import sys
    import tempfile

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:  # its request log, shown if it fails to start
        proc = subprocess.Popen([sys.executable, "-c", _MOTO_SERVER, "-H", "127.0.0.1", "-p", str(port)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        saved = {name: os.environ.get(name) for name in [*_AWS_SET, *_AWS_UNSET, "AWS_ENDPOINT_URL"]}
        try:
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"moto server did not start: {log.read().decode(errors='replace')[-2000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{endpoint}/moto-api/", timeout=1).status_code == 200:
                        break
                time.sleep(0.1)
            for name in _AWS_UNSET:
                os.environ.pop(name, None)
            os.environ.update(_AWS_SET, AWS_ENDPOINT_URL=endpoint)
            yield endpoint
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
