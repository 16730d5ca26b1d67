"""Service settings, read from ``CLOTHSEG_*`` environment variables.

Every limit the API documents has its default here; tests shorten the
time-based ones (link lifetime, task timeout) through the environment.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

MB = 1024 * 1024


def _env(name: str, default: str) -> str:
    return os.environ.get(f"CLOTHSEG_{name}", default)


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
    url_max_redirects: int = field(default_factory=lambda: int(_env("URL_MAX_REDIRECTS", "5")))
    # Networks image_url may reach although private/loopback/reserved, e.g. "10.0.0.0/8,127.0.0.1".
    url_allow_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        default_factory=lambda: tuple(
            ipaddress.ip_network(n.strip(), strict=False)
            for n in _env("URL_ALLOWLIST", "").split(",") if n.strip()
        )
    )
    # Base of the result links; by default the address the client called.
    public_url: str = field(default_factory=lambda: _env("PUBLIC_URL", ""))
    model_path: str = field(default_factory=lambda: _env("MODEL", ""))

    @property
    def database_url(self) -> str:
        return _env("DATABASE_URL", f"sqlite:///{self.data_dir / 'clothseg.db'}")

    @property
    def results_dir(self) -> Path:
        return self.data_dir / "results"
