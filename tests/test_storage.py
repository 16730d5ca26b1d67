"""Result stores: the same contract on local disk and in an S3-compatible bucket (moto's
server over real HTTP, never the network), presigned links that expire, and the choice
of store from CLOTHSEG_STORAGE_URL."""

from __future__ import annotations

import calendar
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import boto3
import httpx
import pytest
from botocore.client import BaseClient
from botocore.config import Config

from clothseg.storage import LocalResultStore, ResultStore, StorageError, describe_store, open_store
from clothseg.storage import s3 as s3_module
from clothseg.storage.s3 import CLIENT_CONFIG, MAX_LINK_SECONDS, S3ResultStore
from tests.conftest import free_port
from tests.services import moto_s3


class Boom(Exception):
    """Raised inside a writer block, as a failed download or conversion would."""


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """One moto server for the whole module (starting one takes about a second)."""
    with moto_s3() as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def session(s3_endpoint: str) -> boto3.session.Session:
    """One session for the module: each new one parses botocore's S3 model again (~0.4 s)."""
    return boto3.session.Session()


@pytest.fixture(scope="module")
def client(session: boto3.session.Session) -> BaseClient:
    """A client as make_client builds it (endpoint, credentials and region from the environment)."""
    return session.client("s3", config=CLIENT_CONFIG)


@pytest.fixture
def bucket(client: BaseClient) -> str:
    """A new, empty bucket for each test, so that tests never see each other's objects."""
    name = f"clothseg-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return name


def object_names(client: BaseClient, bucket: str) -> list[str]:
    return sorted(obj["Key"] for obj in client.list_objects_v2(Bucket=bucket).get("Contents", []))


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ResultStore:
    """Each backend: a folder named by a file:// URL, and a bucket with a prefix."""
    if request.param == "file":
        return open_store(tmp_path.joinpath("results").as_uri(), tmp_path / "unused")
    return S3ResultStore(request.getfixturevalue("bucket"), "results/v1", client=request.getfixturevalue("client"))


# --- the contract, on both backends -------------------------------------------------


def test_put_then_get_round_trips(store: ResultStore) -> None:
    store.put("task/hair.png", b"\x89PNG mask")
    store.put("task/hair.png", b"\x89PNG newer")  # overwrites
    assert store.get("task/hair.png") == b"\x89PNG newer"


def test_writer_stores_large_objects_on_success(store: ResultStore) -> None:
    data = os.urandom(3 << 20)  # past the in-memory spool, so it goes through a temporary file
    with store.writer("inputs/task") as out:
        for i in range(0, len(data), 1 << 16):
            out.write(data[i:i + (1 << 16)])
    assert store.get("inputs/task") == data


def test_writer_stores_nothing_when_the_block_fails(store: ResultStore) -> None:
    with pytest.raises(Boom), store.writer("inputs/task") as out:  # the caller's error, unchanged
        out.write(b"half an upload")
        raise Boom
    with pytest.raises(KeyError):
        store.get("inputs/task")


@pytest.mark.parametrize("key", ["task/absent.png", "../etc/passwd", "/abs", "task//x", ""])
def test_get_of_an_absent_or_invalid_key_is_key_error(store: ResultStore, key: str) -> None:
    with pytest.raises(KeyError):
        store.get(key)


@pytest.mark.parametrize(("doomed", "kept"), [
    (["task/a.png", "task/sub/b.png"], ["task2/c.png", "task-x/d.png", "task-y"]),  # a task's folder
    (["task"], ["task2", "task-x", "task-y/c.png"]),  # an uploaded input, one object
])
def test_delete_prefix_removes_the_object_and_the_folder_but_not_lookalikes(
        store: ResultStore, doomed: list[str], kept: list[str]) -> None:
    for key in doomed + kept:
        store.put(key, key.encode())
    store.delete_prefix("task")
    for key in doomed:
        with pytest.raises(KeyError):
            store.get(key)
    for key in kept:
        assert store.get(key) == key.encode()
    store.delete_prefix("task")  # nothing left there: not an error


def test_delete_prefix_in_a_bucket_removes_an_object_and_a_folder_of_the_same_name(
        client: BaseClient, bucket: str) -> None:
    # On disk "task" is a file or a folder; in a bucket it can be both at once.
    store = S3ResultStore(bucket, "p", client=client)
    for key in ["task", "task/a.png", "task2", "task2/b.png"]:
        store.put(key, b"x")
    store.delete_prefix("task")
    assert object_names(client, bucket) == ["p/task2", "p/task2/b.png"]


# --- S3 specifics ---------------------------------------------------------------------


def test_objects_are_named_under_the_prefix(client: BaseClient, bucket: str) -> None:
    S3ResultStore(bucket, "/results/v1/", client=client).put("task/hair.png", b"x")
    S3ResultStore(bucket, "", client=client).put("task/hair.png", b"y")
    assert object_names(client, bucket) == ["results/v1/task/hair.png", "task/hair.png"]


def test_delete_prefix_pages_through_many_objects(client: BaseClient, bucket: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3_module, "LIST_PAGE", 2)
    monkeypatch.setattr(s3_module, "DELETE_BATCH", 3)
    store = S3ResultStore(bucket, "p", client=client)
    for i in range(7):
        store.put(f"task/{i}.png", b"x")
    store.put("task2/keep.png", b"x")
    store.delete_prefix("task")
    assert object_names(client, bucket) == ["p/task2/keep.png"]


def test_a_link_works_until_it_expires_then_is_refused(client: BaseClient, bucket: str) -> None:
    store = S3ResultStore(bucket, "results", client=client)
    store.put("task/hair.png", b"mask bytes")
    expires = int(time.time()) + 2  # valid for at least one more second
    url = store.link("task/hair.png", expires)
    query = parse_qs(urlsplit(url).query)
    signed = calendar.timegm(time.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ"))
    assert signed + int(query["X-Amz-Expires"][0]) == expires  # valid exactly until `expires`
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.content == b"mask bytes"
    time.sleep(max(0.0, expires + 0.3 - time.time()))
    assert 400 <= httpx.get(url).status_code < 500


def test_links_can_point_to_the_endpoint_clients_reach(s3_endpoint: str, client: BaseClient, bucket: str,
                                                       tmp_path: Path) -> None:
    # The service talks to the server as 127.0.0.1; its clients reach the same server as localhost.
    public = s3_endpoint.replace("127.0.0.1", "localhost")
    store = open_store(f"s3://{bucket}/results", tmp_path, link_endpoint=public)
    store.put("task/hair.png", b"mask bytes")
    assert object_names(client, bucket) == ["results/task/hair.png"]
    url = store.link("task/hair.png", int(time.time()) + 60)
    assert url.startswith(f"{public}/{bucket}/results/task/hair.png?X-Amz-")
    assert httpx.get(url).content == b"mask bytes"
    assert describe_store(f"s3://{bucket}/results", tmp_path, public) == (
        f"s3://{bucket}/results at {s3_endpoint}, links via {public}")


@pytest.mark.parametrize(("storage_url", "endpoint", "why"), [
    ("", "https://files.example.com", "needs CLOTHSEG_STORAGE_URL=s3://"),
    ("file:///srv/results", "https://files.example.com", "needs CLOTHSEG_STORAGE_URL=s3://"),
    ("s3://bucket", "files.example.com", "must be an http(s) URL"),
    ("s3://bucket", "ftp://files.example.com", "must be an http(s) URL"),
])
def test_a_link_endpoint_needs_s3_storage_and_an_http_url(storage_url: str, endpoint: str, why: str) -> None:
    with pytest.raises(ValueError, match="CLOTHSEG_STORAGE_LINK_ENDPOINT") as refused:
        open_store(storage_url, Path("/default"), link_endpoint=endpoint)
    assert why in str(refused.value)


def test_link_lifetime_is_at_least_a_second_and_at_most_a_week(client: BaseClient, bucket: str) -> None:
    store = S3ResultStore(bucket, client=client)
    now = int(time.time())
    lifetimes = [int(parse_qs(urlsplit(store.link("k", e)).query)["X-Amz-Expires"][0]) for e in (now - 60, now + 10**9)]
    assert lifetimes == [1, MAX_LINK_SECONDS]
    with pytest.raises(KeyError):
        store.link("../k", now + 60)


def test_local_store_has_no_link_of_its_own(tmp_path: Path) -> None:
    assert LocalResultStore(tmp_path).link("task/hair.png", int(time.time()) + 60) is None


def all_operations(store: S3ResultStore) -> list[tuple[str, object]]:
    """Run every operation, returning what each raised."""
    outcomes: list[tuple[str, object]] = []
    for name, call in [("put", lambda: store.put("task/a.png", b"x")),
                       ("get", lambda: store.get("task/a.png")),
                       ("delete_prefix", lambda: store.delete_prefix("task")),
                       ("writer", lambda: _write(store))]:
        try:
            call()
            outcomes.append((name, None))
        except Exception as exc:  # what was raised is the point
            outcomes.append((name, exc))
    return outcomes


def _write(store: S3ResultStore) -> None:
    with store.writer("task/a.png") as out:
        out.write(b"x")


def test_a_missing_bucket_is_storage_error(client: BaseClient) -> None:
    store = S3ResultStore("clothseg-no-such-bucket", client=client)
    for name, exc in all_operations(store):
        assert isinstance(exc, StorageError), (name, exc)  # not KeyError, not a botocore exception
        assert "NoSuchBucket" in str(exc) and "s3://clothseg-no-such-bucket" in str(exc), str(exc)


def test_an_unreachable_endpoint_is_storage_error(session: boto3.session.Session) -> None:
    # Nothing listens there; the store's settings but one attempt, so as not to wait out the retries.
    fast = CLIENT_CONFIG.merge(Config(retries={"total_max_attempts": 1, "mode": "standard"}))
    dead = session.client("s3", endpoint_url=f"http://127.0.0.1:{free_port()}", config=fast)
    for name, exc in all_operations(S3ResultStore("bucket", "p", client=dead)):
        assert isinstance(exc, StorageError), (name, exc)
        assert "Could not connect to the endpoint URL" in str(exc), str(exc)


def test_the_default_client_has_bounded_timeouts_and_the_standard_endpoint_settings(s3_endpoint: str,
                                                                                    tmp_path: Path) -> None:
    store = open_store("s3://bucket/some/prefix", tmp_path)
    assert isinstance(store, S3ResultStore)
    assert (store.bucket, store.prefix, store.endpoint) == ("bucket", "some/prefix", s3_endpoint)
    config = store._client.meta.config
    assert (config.connect_timeout, config.read_timeout, config.signature_version) == (5, 30, "s3v4")
    # botocore reads retries={"max_attempts": 3} as 3 retries after the first attempt.
    assert config.retries == {"total_max_attempts": 4, "mode": "standard"}
    assert store._client.meta.region_name == "us-east-1"  # from AWS_REGION
    assert describe_store("s3://bucket/some/prefix", tmp_path) == f"s3://bucket/some/prefix at {s3_endpoint}"


# --- choosing the store -----------------------------------------------------------------


@pytest.mark.parametrize(("url", "folder"), [
    ("", "/default"),
    ("   ", "/default"),
    ("file:///srv/results", "/srv/results"),
    ("file:///srv/my%20results/", "/srv/my results"),
    ("file:/srv/results", "/srv/results"),
])
def test_open_store_folders(url: str, folder: str) -> None:
    store = open_store(url, Path("/default"))
    assert isinstance(store, LocalResultStore)
    assert store.root == Path(folder)
    assert describe_store(url, Path("/default")) == f"folder {folder}"


@pytest.mark.parametrize(("url", "bucket", "prefix"), [
    ("s3://results", "results", ""),
    ("s3://results/", "results", ""),
    ("s3://results/clothseg/prod", "results", "clothseg/prod"),
    ("s3://my.bucket-1/a/", "my.bucket-1", "a"),
])
def test_open_store_buckets(client: BaseClient, monkeypatch: pytest.MonkeyPatch, url: str, bucket: str,
                            prefix: str) -> None:
    monkeypatch.setattr(s3_module, "make_client", lambda: client)  # a new one costs ~0.4 s
    store = open_store(url, Path("/default"))
    assert isinstance(store, S3ResultStore)
    assert (store.bucket, store.prefix) == (bucket, prefix)


@pytest.mark.parametrize(("url", "why"), [
    ("/srv/results", "bare path"),
    ("results", "bare path"),
    ("file://server/srv/results", "no host"),
    ("file:results", "absolute"),
    ("file://", "absolute"),
    ("s3://", "no bucket"),
    ("s3:///prefix", "no bucket"),
    ("s3://key:secret@host:9000/bucket", "not a bucket name"),
    ("s3://bucket/a//b", "segment"),
    ("s3://bucket/../b", "segment"),
    ("s3://bucket?region=x", "query"),
    ("http://minio:9000/bucket", "unknown scheme"),
    ("gs://bucket", "unknown scheme"),
])
def test_open_store_refuses(url: str, why: str) -> None:
    with pytest.raises(ValueError) as refused:
        open_store(url, Path("/default"))
    message = str(refused.value)
    assert "CLOTHSEG_STORAGE_URL" in message and why in message
    assert "file:///" in message and "s3://bucket" in message  # the two accepted forms
