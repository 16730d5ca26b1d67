"""Prometheus metrics and structured (JSON) logs."""

from __future__ import annotations

import logging
import sys

from prometheus_client import Counter, Gauge, Histogram
from pythonjsonlogger.json import JsonFormatter

REQUESTS = Counter("clothseg_http_requests_total", "HTTP requests", ["method", "route", "status"])
TASK_SECONDS = Histogram(
    "clothseg_task_seconds", "Time from a worker taking a task to its final state",
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 180),
)
QUEUE_DEPTH = Gauge("clothseg_queue_depth", "Tasks waiting in the queue")
TASK_FAILURES = Counter("clothseg_task_failures_total", "Tasks that ended in a failure state", ["state"])


def configure_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter("{asctime}{levelname}{name}{message}", style="{",
                                       rename_fields={"asctime": "time", "levelname": "level"}))
    root = logging.getLogger("clothseg")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
