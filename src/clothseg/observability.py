"""Prometheus metrics and structured logs: every line the server writes is JSON."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import warnings
from typing import TextIO

from prometheus_client import Counter, Gauge, Histogram
from pythonjsonlogger.json import JsonFormatter

REQUESTS = Counter("clothseg_http_requests_total", "HTTP requests", ["method", "route", "status"])
TASK_SECONDS = Histogram(
    "clothseg_task_seconds", "Time from the start of processing (download or worker) to the final state",
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 180),
)
QUEUE_DEPTH = Gauge("clothseg_queue_depth", "Tasks waiting in the queue")
TASK_FAILURES = Counter("clothseg_task_failures_total", "Tasks that ended in a failure state", ["state"])

# Lines native libraries write straight to the process's stderr that tell an
# operator nothing (MediaPipe's TensorFlow Lite and absl start-up notes, which
# no setting silences in mediapipe 0.10.14), or that only describe a client's
# damaged upload, which the client is told about (-7) already (LibRaw).
NATIVE_NOISE = (
    "Created TensorFlow Lite XNNPACK delegate for CPU",
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "Feedback manager requires a model with a single signature inference",
    "unknown file: ",
)
# glog/absl lines start with their severity letter (W0000 00:00:...); TensorFlow Lite's with a word.
GLOG_LEVELS = {"I": logging.INFO, "W": logging.WARNING, "E": logging.ERROR, "F": logging.CRITICAL}
WORD_LEVELS = {"INFO:": logging.INFO, "WARNING:": logging.WARNING, "ERROR:": logging.ERROR}


def json_handler(stream: TextIO) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("{asctime}{levelname}{name}{message}", style="{",
                                       rename_fields={"asctime": "time", "levelname": "level"}))
    return handler


def configure_logging(level: int = logging.INFO) -> None:
    """JSON lines on stderr for our loggers, the libraries' (uvicorn's included:
    run it with log_config=None), Python warnings and uncaught exceptions."""
    root = logging.getLogger()
    root.handlers[:] = [json_handler(sys.stderr)]
    root.setLevel(logging.WARNING)
    logging.getLogger("clothseg").setLevel(level)
    logging.captureWarnings(True)
    # mediapipe 0.10.14 calls a deprecated protobuf API on every image; harmless and not ours to fix.
    warnings.filterwarnings("ignore", message=r"SymbolDatabase\.GetPrototype\(\) is deprecated")
    # Pillow's notes on malformed uploads: the client hears about its file (-7), the operator need not.
    warnings.filterwarnings("ignore", module="PIL")
    log = logging.getLogger("clothseg")
    sys.excepthook = lambda kind, exc, tb: log.critical("uncaught exception", exc_info=(kind, exc, tb))
    threading.excepthook = lambda args: log.critical(
        "uncaught exception in a thread", exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        extra={"thread": getattr(args.thread, "name", None)})


def relay_native_output() -> None:
    """Send whatever this process writes to fds 1 and 2 (native libraries
    included) through a relay process that passes JSON lines on and wraps
    any other line as a JSON log record.  A separate process, so that even a
    crash's last words reach the log."""
    destination = os.dup(sys.stderr.fileno())
    relay = subprocess.Popen([sys.executable, "-m", "clothseg.observability"], stdin=subprocess.PIPE,
                             stdout=destination)
    os.close(destination)
    assert relay.stdin is not None
    sys.stdout.flush()
    sys.stderr.flush()
    for fd in (1, 2):
        os.dup2(relay.stdin.fileno(), fd)
    relay.stdin.close()  # fds 1 and 2 hold the pipe now; it closes when this process ends


def native_level(line: str) -> int:
    first = line.split(" ", 1)[0]
    if first in WORD_LEVELS:
        return WORD_LEVELS[first]
    if first[:1] in GLOG_LEVELS and first[1:].isdigit():
        return GLOG_LEVELS[first[:1]]
    return logging.WARNING


def relay(lines: TextIO, out: TextIO) -> None:
    """Copy JSON lines from ``lines`` to ``out``; log any other line as a JSON record."""
    native = logging.getLogger("native")
    native.addHandler(json_handler(out))
    native.propagate = False
    for raw in lines:
        line = raw.rstrip("\r\n")
        # A native library may write a line in pieces, and one of our records can land
        # between them: each part is relayed on its own, so our record is never lost.
        start = line.find('{"time": ')
        for part in (line[:start], line[start:]) if start > 0 else (line,):
            if not part.strip() or any(noise in part for noise in NATIVE_NOISE):
                continue
            try:
                is_json = isinstance(json.loads(part), dict)
            except ValueError:
                is_json = False
            if is_json:
                out.write(part + "\n")
                out.flush()
            else:
                native.log(native_level(part), part)


if __name__ == "__main__":  # the relay process started by relay_native_output()
    # The server decides when to stop; the relay ends when the server's output closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    relay(io.TextIOWrapper(sys.stdin.buffer, errors="replace"), sys.stdout)
