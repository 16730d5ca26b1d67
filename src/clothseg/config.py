"""Service settings, read from ``CLOTHSEG_*`` environment variables.

Every limit the API documents has its default here; tests shorten the
time-based ones (link lifetime, task timeout) through the environment.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

MB = 1024 * 1024


def _env(name: str, default: str) -> str:
    return os.environ.get(f"CLOTHSEG_{name}", default)


def parse_allowlist(text: str) -> frozenset[tuple[str, int]]:
    """``"127.0.0.1:8123, [::1]:9000, images.lan:80"`` -> {(host, port)}.

    An entry names one host and one port, never a network, so allowing a test
    image server on loopback does not also open the API itself to image_url.
    IP hosts are normalised (``[::0001]`` == ``[::1]``), names lower-cased.
    """
    entries = set()
    for entry in filter(None, (e.strip() for e in text.split(","))):
        parts = urlsplit(f"//{entry}")
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or port is None or parts.path or parts.query or "@" in entry:
            raise ValueError(f"CLOTHSEG_URL_ALLOWLIST entries are host:port (e.g. 127.0.0.1:8123 or "
                             f"[::1]:9000), got {entry!r}")
        try:
            host = str(ipaddress.ip_address(parts.hostname))
        except ValueError:
            host = parts.hostname.lower()
        entries.add((host, port))
    return frozenset(entries)


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(default_factory=lambda: Path(_env("DATA_DIR", "./clothseg-data")))
    # Result links and task records live this long after completion (spec: 1 hour).
    result_ttl_seconds: float = field(default_factory=lambda: float(_env("RESULT_TTL", "3600")))
    # Spec: "The maximum processing time is 180 seconds."
    task_timeout_seconds: float = field(default_factory=lambda: float(_env("TASK_TIMEOUT", "180")))
    sweep_interval_seconds: float = field(default_factory=lambda: float(_env("SWEEP_INTERVAL", "30")))
    max_upload_bytes: int = field(default_factory=lambda: int(_env("MAX_UPLOAD_BYTES", str(20 * MB))))
    max_url_bytes: int = field(default_factory=lambda: int(_env("MAX_URL_BYTES", str(30 * MB))))
    max_side: int = field(default_factory=lambda: int(_env("MAX_SIDE", "4096")))
    workers: int = field(default_factory=lambda: int(_env("WORKERS", "1")))
    engine_threads: int = field(default_factory=lambda: int(_env("ENGINE_THREADS", "0")))
    max_queue: int = field(default_factory=lambda: int(_env("MAX_QUEUE", "100")))
    # A task interrupted by a crash is re-run until it has been started this often,
    # then ends with state -13.
    max_attempts: int = field(default_factory=lambda: int(_env("MAX_ATTEMPTS", "2")))
    default_qps: float = field(default_factory=lambda: float(_env("DEFAULT_QPS", "2")))
    default_credits: int = field(default_factory=lambda: int(_env("DEFAULT_CREDITS", "1000")))
    url_connect_timeout: float = field(default_factory=lambda: float(_env("URL_CONNECT_TIMEOUT", "5")))
    url_read_timeout: float = field(default_factory=lambda: float(_env("URL_READ_TIMEOUT", "15")))
    # The whole download, redirects included; it is also cut at the task's own deadline.
    url_timeout: float = field(default_factory=lambda: float(_env("URL_TIMEOUT", "60")))
    url_max_redirects: int = field(default_factory=lambda: int(_env("URL_MAX_REDIRECTS", "5")))
    # Downloads in flight at once; they run beside the workers, never in them.
    downloads: int = field(default_factory=lambda: int(_env("DOWNLOADS", "16")))
    # host:port pairs image_url may reach although not public, e.g. "127.0.0.1:8123,[::1]:9000".
    url_allowlist: frozenset[tuple[str, int]] = field(
        default_factory=lambda: parse_allowlist(_env("URL_ALLOWLIST", ""))
    )
    # Base of the result links; by default the address the client called.
    public_url: str = field(default_factory=lambda: _env("PUBLIC_URL", ""))
    model_path: str = field(default_factory=lambda: _env("MODEL", ""))
    # Redis for what several API nodes share (the QPS limiter); empty = in-process.
    redis_url: str = field(default_factory=lambda: _env("REDIS_URL", ""))
    # Prefix of every Redis key, so deployments (or test runs) can share one Redis.
    redis_prefix: str = field(default_factory=lambda: _env("REDIS_PREFIX", "clothseg:"))
    # Celery broker (redis:// or amqp://): tasks run in `clothseg worker` processes; empty = in-process.
    broker_url: str = field(default_factory=lambda: _env("BROKER_URL", ""))
    # The broker's queue name, so deployments (or test runs) can share one broker.
    queue_name: str = field(default_factory=lambda: _env("QUEUE", "clothseg"))
    # Where results live: file:///shared/folder or s3://bucket/prefix; empty = <data dir>/results.
    storage_url: str = field(default_factory=lambda: _env("STORAGE_URL", ""))
    # With s3:// storage: the endpoint clients reach the bucket at, which result links
    # point to (e.g. https://files.example.com); empty = the endpoint the service uses.
    storage_link_endpoint: str = field(default_factory=lambda: _env("STORAGE_LINK_ENDPOINT", ""))
    # A process working on a task renews its lease every third of this; a task whose
    # lease ran out (its process died) is recovered by any API node.
    lease_seconds: float = field(default_factory=lambda: float(_env("LEASE_SECONDS", "30")))
    # `clothseg worker` serves Prometheus metrics on this port (0: none).
    metrics_port: int = field(default_factory=lambda: int(_env("METRICS_PORT", "9464")))

    def __post_init__(self) -> None:
        shared_db = self.shared_database
        if self.redis_url and not shared_db:
            raise ValueError("CLOTHSEG_REDIS_URL shares the QPS limit between API nodes, which also need one "
                             "database: set CLOTHSEG_DATABASE_URL (e.g. postgresql://user@host:5432/clothseg)")
        if self.redis_url and urlsplit(self.redis_url).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"CLOTHSEG_REDIS_URL must be redis://, rediss:// or unix://, got {self.redis_url!r}")
        if self.broker_url:
            if urlsplit(self.broker_url).scheme not in ("redis", "rediss", "amqp", "amqps", "pyamqp"):
                raise ValueError(f"CLOTHSEG_BROKER_URL must be redis://... or amqp://..., got "
                                 f"{self.broker_url_masked!r}")
            missing = [f"{name} ({why})" for name, why, value in (
                ("CLOTHSEG_DATABASE_URL", "tasks and credits every node sees, e.g. postgresql://...", shared_db),
                ("CLOTHSEG_REDIS_URL", "the shared QPS limit and task-finished notifications", self.redis_url),
                ("CLOTHSEG_STORAGE_URL", "results every node can read: file:///shared/folder or s3://bucket",
                 self.storage_url),
            ) if not value]
            if missing:
                raise ValueError("CLOTHSEG_BROKER_URL runs tasks on workers on other machines, which also "
                                 "need: " + "; ".join(missing))
        if self.storage_url or self.storage_link_endpoint:
            from clothseg.storage.urls import check_link_endpoint, parse_storage_url

            parse_storage_url(self.storage_url, self.results_dir)  # its ValueError names the setting
            check_link_endpoint(self.storage_link_endpoint, self.storage_url)
        if self.lease_seconds <= 0:
            raise ValueError("CLOTHSEG_LEASE_SECONDS must be positive")

    @property
    def shared_database(self) -> bool:
        """A database several processes share (not the embedded SQLite file)."""
        return not self.database_url.startswith("sqlite")

    @property
    def distributed(self) -> bool:
        """Tasks run in `clothseg worker` processes, not in the API node."""
        return bool(self.broker_url)

    @property
    def database_url(self) -> str:
        return _env("DATABASE_URL", f"sqlite:///{self.data_dir / 'clothseg.db'}")

    @property
    def results_dir(self) -> Path:
        return self.data_dir / "results"

    @property
    def broker_url_masked(self) -> str:
        return _masked(self.broker_url)

    def describe(self) -> dict[str, str]:
        """The effective shared components, as a start-up log may print them (passwords masked)."""
        from clothseg.database import masked_url
        from clothseg.storage import describe_store

        redis_shown = f"redis {_masked(self.redis_url)} (prefix {self.redis_prefix})"
        return {"database": masked_url(self.database_url),
                "results": describe_store(self.storage_url, self.results_dir, self.storage_link_endpoint),
                "qps_limiter": redis_shown if self.redis_url else "in-process",
                "notifications": redis_shown if self.redis_url else "in-process",
                "workers": (f"celery workers via {self.broker_url_masked} (queue {self.queue_name})"
                            if self.broker_url else f"{self.workers} in-process")}


def _masked(url: str) -> str:
    """``url`` with its password replaced by ***."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()
