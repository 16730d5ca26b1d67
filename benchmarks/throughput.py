"""Throughput and end-to-end latency of real deployments on this machine.

    python benchmarks/throughput.py [--tasks 200] [--clients 16] [--poll 0.05]
                                    [--configs embedded-1,embedded-2,1n1w,1n2w,2n1w,2n2w]
                                    [--broker redis|amqp] [--class-type 4] [--output-type 3]

For each configuration it starts a deployment of its own (subprocesses of
`clothseg serve` / `clothseg worker`), sends it ``--tasks`` asynchronous tasks
(the committed photos under tests/data/ccp/photos, cycled) from ``--clients``
client threads, each of which creates a task (sync=0), polls
GET /api/tasks/visual/clothing-segmentation/<id> every ``--poll`` seconds until
data.state is 1 or negative, then creates the next one (a closed loop: at most
``--clients`` tasks in flight).  Latency is create-request start -> the poll
that first saw state 1; throughput is succeeded tasks / (first create -> last
completion).  Requests go to the API nodes round robin.

Configurations:
  embedded-N  one `clothseg serve` (SQLite, local results) with CLOTHSEG_WORKERS=N threads sharing
              one model, CLOTHSEG_ENGINE_THREADS = cores // N, at least 1 (on 2 cores: embedded-1
              has 2 engine threads, embedded-2 two workers of 1)
  XnYw[Zc]    X API nodes + Y `clothseg worker` processes (--concurrency Z, default 1: Z threads
              sharing one model) over PostgreSQL, Redis (QPS limiter, notifications), the broker
              (--broker) and file:// results; CLOTHSEG_ENGINE_THREADS = cores // (Y * Z), at least 1

Each scale-out configuration gets a fresh PostgreSQL database (CREATE DATABASE
clothseg_bench_<random>, `clothseg db upgrade`, dropped at the end), its own
Redis key prefix and queue name (deleted at the end) and its own temp folders.
Everything started is killed at the end, also on Ctrl-C or an error.

Where the time goes: CPU seconds (user + system, /proc) used during the timed
run by the worker processes, the API node processes (the embedded server does
both), the PostgreSQL backends of the configuration's database (+ the shared
WAL writer, checkpointer, background writer), the Redis server and RabbitMQ
(shared: anything else using them counts too), the benchmark's own client
threads, and the whole machine's busy share; and the mean processing time per
task (clothseg_task_seconds sum/count from the workers' metrics port, or the
embedded server's /metrics: from a worker's claim to the final state, i.e.
decode + model + PNG/ZIP encoding + storing) and mean queue wait (tasks.created_at
-> processed_at from the database).

Services: CLOTHSEG_BENCH_POSTGRES (default postgresql://postgres@127.0.0.1:5432/postgres,
an admin connection), CLOTHSEG_BENCH_REDIS (redis://127.0.0.1:6379/0),
CLOTHSEG_BENCH_RABBITMQ (amqp://guest:guest@127.0.0.1:5672//).

Before the timed run, 2 tasks per model slot warm the deployment up (not counted).
Also reported: the peak RSS (VmHWM) of a worker and of an API node, and the API
node CPU per HTTP request.

Prints a table (Rich) and, last, one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import itertools
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = sorted((ROOT / "tests/data/ccp/photos").glob("*.jpg"))
TASKS = "/api/tasks/visual/clothing-segmentation"
POSTGRES_ADMIN = os.environ.get("CLOTHSEG_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("CLOTHSEG_BENCH_REDIS", "redis://127.0.0.1:6379/0")
RABBITMQ_URL = os.environ.get("CLOTHSEG_BENCH_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672//")
CORES = os.cpu_count() or 1
CLK_TCK = os.sysconf("SC_CLK_TCK")
DEFAULT_CONFIGS = "embedded-1,embedded-2,1n1w,1n2w,2n1w,2n2w"
# Background processes of PostgreSQL every database's writes go through.
PG_SHARED_BACKENDS = ("walwriter", "checkpointer", "background writer")


# -- configurations ----------------------------------------------------------------

@dataclass(frozen=True)
class Config:
    name: str
    embedded: bool
    nodes: int
    workers: int
    concurrency: int  # tasks at once per worker process (CLOTHSEG_WORKERS)
    engine_threads: int

    @property
    def slots(self) -> int:
        return (1 if self.embedded else self.workers) * self.concurrency


def parse_config(name: str) -> Config:
    if name.startswith("embedded-"):
        workers = int(name.removeprefix("embedded-"))
        return Config(name, True, 1, 1, workers, max(1, CORES // workers))
    if match := re.fullmatch(r"(\d+)n(\d+)w(?:(\d+)c)?", name):
        nodes, workers, concurrency = int(match[1]), int(match[2]), int(match[3] or 1)
        if min(nodes, workers, concurrency) < 1:
            raise ValueError(f"{name}: at least one node, one worker and one task at once")
        return Config(name, False, nodes, workers, concurrency, max(1, CORES // (workers * concurrency)))
    raise ValueError(f"unknown configuration {name!r}: embedded-<workers> or <nodes>n<workers>w[<concurrency>c], "
                     "e.g. 2n1w or 1n1w2c")


# -- processes and CPU accounting ---------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields from 3 (state) on; the name may hold spaces


def cpu_seconds(pid: int, children: bool = True) -> float:
    """utime + stime of ``pid`` (+ its reaped children's) in seconds; 0 if it is gone."""
    f = _stat(pid)
    if f is None:
        return 0.0
    ticks = int(f[11]) + int(f[12]) + ((int(f[13]) + int(f[14])) if children else 0)
    return ticks / CLK_TCK


def descendants(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (f := _stat(int(entry.name))) is not None:
            parents.setdefault(int(f[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and everything it started (the log relay included)."""
    return cpu_seconds(pid) + sum(cpu_seconds(c) for c in descendants(pid))


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return total - idle, total


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM) in MB; 0 if it is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def pids_named(comm: str) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == comm:
                    out.append(int(entry.name))
    return out


class Proc:
    """A subprocess with its log file, in a session of its own (killed with its children)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.log = name, log
        with open(log, "ab") as out:
            self.popen = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=15)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)  # whatever is left of it (its log relay)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)


def clothseg(*args: str) -> list[str]:
    return [sys.executable, "-m", "clothseg.cli", *args]


def run_cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(clothseg(*args), env=env, capture_output=True, text=True, timeout=180)
    if done.returncode:
        raise RuntimeError(f"clothseg {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def metric_sums(url: str) -> dict[str, float]:
    """clothseg_task_seconds sum/count and failures from a Prometheus endpoint."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {"seconds": 0.0, "count": 0.0, "failures": 0.0}
    text = httpx.get(url, timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "clothseg_task_seconds_sum":
                out["seconds"] += sample.value
            elif sample.name == "clothseg_task_seconds_count":
                out["count"] += sample.value
            elif sample.name == "clothseg_task_failures_total":
                out["failures"] += sample.value
    return out


# -- a deployment ------------------------------------------------------------------

class Deployment:
    def __init__(self, cfg: Config, broker: str, root: Path, stack: contextlib.ExitStack) -> None:
        self.cfg, self.broker, self.root, self.stack = cfg, broker, root, stack
        self.nodes: list[Proc] = []
        self.node_urls: list[str] = []
        self.workers: list[Proc] = []
        self.worker_metrics: list[str] = []
        self.database_name: str | None = None
        self.sqlite_path: Path | None = None
        self.prefix = f"clothseg-bench-{uuid.uuid4().hex[:12]}:"
        self.queue = f"{self.prefix}tasks"
        base = {k: v for k, v in os.environ.items() if not k.startswith("CLOTHSEG_")}
        self.env = {**base, "CLOTHSEG_ENGINE_THREADS": str(cfg.engine_threads),
                    "CLOTHSEG_WORKERS": str(cfg.concurrency), "PYTHONUNBUFFERED": "1"}

    # The shared services of a scale-out configuration, each removed on exit.
    def _create_database(self) -> str:
        import psycopg

        name = f"clothseg_bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.database_name = name
        self.stack.callback(self._drop_database, name)
        return POSTGRES_ADMIN.rsplit("/", 1)[0] + f"/{name}"

    @staticmethod
    def _drop_database(name: str) -> None:
        import psycopg

        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _clean_broker(self) -> None:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(match=f"*{self.prefix}*"):  # kombu's binding keys carry the queue name
            client.delete(key)
        client.close()
        if self.broker == "amqp":
            from kombu import Connection

            with contextlib.suppress(Exception), Connection(RABBITMQ_URL, connect_timeout=3) as conn:
                conn.default_channel.queue_delete(self.queue)

    def start(self) -> None:
        cfg = self.cfg
        if cfg.embedded:
            data = self.root / "node0"
            self.sqlite_path = data / "clothseg.db"
            self.env["CLOTHSEG_DATA_DIR"] = str(data)
        else:
            self.stack.callback(self._clean_broker)
            self.env.update({
                "CLOTHSEG_DATABASE_URL": self._create_database(),
                "CLOTHSEG_REDIS_URL": REDIS_URL, "CLOTHSEG_REDIS_PREFIX": self.prefix,
                "CLOTHSEG_BROKER_URL": RABBITMQ_URL if self.broker == "amqp" else REDIS_URL,
                "CLOTHSEG_QUEUE": self.queue,
                "CLOTHSEG_STORAGE_URL": f"file://{self.root / 'shared-results'}",
                "CLOTHSEG_DATA_DIR": str(self.root / "cli"),
            })
            run_cli(self.env, "db", "upgrade")
        self.key = run_cli(self.env, "keys", "create", "--credits", "10000000", "--qps", "10000",
                           "--name", "benchmark").strip().splitlines()[-1]
        for i in range(0 if cfg.embedded else cfg.workers):
            port = free_port()
            proc = Proc(f"worker{i}", clothseg("worker", "--data-dir", str(self.root / f"worker{i}"),
                                                "--concurrency", str(cfg.concurrency), "--metrics-port", str(port)),
                        self.env, self.root / f"worker{i}.log")
            self.stack.callback(proc.stop)
            self.workers.append(proc)
            self.worker_metrics.append(f"http://127.0.0.1:{port}/metrics")
        for i in range(cfg.nodes):
            port = free_port()
            proc = Proc(f"node{i}", clothseg("serve", "--port", str(port), "--data-dir", str(self.root / f"node{i}")),
                        self.env, self.root / f"node{i}.log")
            self.stack.callback(proc.stop)
            self.nodes.append(proc)
            self.node_urls.append(f"http://127.0.0.1:{port}")
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 180
        pending_nodes = dict(zip(self.node_urls, self.nodes, strict=True))
        pending_workers = list(self.workers)
        last_answers: dict[str, str] = {}
        while pending_nodes or pending_workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready after 180 s: {[p.name for p in pending_workers]} "
                                   f"{list(pending_nodes)} {last_answers}")
            for proc in [*pending_nodes.values(), *pending_workers]:
                if not proc.alive():
                    raise RuntimeError(f"{proc.name} exited: {proc.tail()}")
            for url, proc in list(pending_nodes.items()):
                with contextlib.suppress(httpx.HTTPError):
                    answer = httpx.get(f"{url}/healthz", timeout=5)
                    if answer.status_code == 200:
                        del pending_nodes[url]
                    else:  # e.g. 500 "workers: none alive" until a worker's first heartbeat
                        last_answers[proc.name] = answer.text
            pending_workers = [w for w in pending_workers if "worker ready" not in w.tail()]
            time.sleep(0.25)
        if self.workers:
            time.sleep(1.0)  # from "worker ready" to consuming

    # -- what the figures are made of
    def cpu_groups(self) -> dict[str, list[int]]:
        groups = {"workers": [w.pid for w in self.workers], "api_nodes": [n.pid for n in self.nodes]}
        if not self.cfg.embedded:
            groups["postgres"] = self._postgres_pids()
            groups["redis"] = pids_named("redis-server")
            if self.broker == "amqp":
                groups["rabbitmq"] = pids_named("beam.smp")
        return groups

    def _postgres_pids(self) -> list[int]:
        import psycopg

        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
            rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s OR backend_type = ANY(%s)",
                                (self.database_name, list(PG_SHARED_BACKENDS))).fetchall()
        return [r[0] for r in rows]

    def metrics_urls(self) -> list[str]:
        return [f"{u}/metrics" for u in self.node_urls] if self.cfg.embedded else self.worker_metrics

    def task_times(self) -> list[tuple[float, float | None, float | None, int]]:
        """(created_at, processed_at, completed_at, state) of every task, from the database."""
        query = "SELECT created_at, processed_at, completed_at, state FROM tasks"
        if self.sqlite_path is not None:
            with contextlib.closing(sqlite3.connect(self.sqlite_path)) as conn:
                return conn.execute(query).fetchall()
        import psycopg

        with psycopg.connect(self.env["CLOTHSEG_DATABASE_URL"]) as conn:
            return conn.execute(query).fetchall()


@dataclass
class Snapshot:
    at: float
    cpu: dict[int, float]
    groups: dict[str, list[int]]
    machine: tuple[int, int]
    client: float
    metrics: dict[str, float]


def snapshot(dep: Deployment) -> Snapshot:
    groups = dep.cpu_groups()
    cpu: dict[int, float] = {}
    for name, pids in groups.items():
        for pid in pids:
            # Processes we started: with their children (the log relay); shared servers: alone.
            cpu[pid] = tree_cpu(pid) if name in ("workers", "api_nodes") else cpu_seconds(pid, children=False)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    metrics = {"seconds": 0.0, "count": 0.0, "failures": 0.0}
    for url in dep.metrics_urls():
        for k, v in metric_sums(url).items():
            metrics[k] += v
    return Snapshot(time.monotonic(), cpu, groups, machine_ticks(), usage.ru_utime + usage.ru_stime, metrics)


def cpu_between(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """CPU seconds per group between two snapshots; a process that appeared meanwhile counts whole."""
    out = {}
    for name, pids in after.groups.items():
        out[name] = sum(max(0.0, after.cpu.get(pid, 0.0) - before.cpu.get(pid, 0.0)) for pid in set(pids))
    out["client"] = after.client - before.client
    busy = after.machine[0] - before.machine[0]
    total = after.machine[1] - before.machine[1]
    out["machine_busy_share"] = busy / total if total else 0.0
    out["machine_busy_cpu_s"] = busy / CLK_TCK
    return out


# -- the load ----------------------------------------------------------------------

@dataclass
class Outcome:
    started: float
    ended: float
    state: int
    error: str = ""


@dataclass
class Load:
    urls: list[str]
    key: str
    photos: list[bytes]
    form: dict[str, str]
    poll: float
    _next_url: Iterator[str] = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    requests: int = 0  # HTTP requests sent (creates and polls)

    def __post_init__(self) -> None:
        self._next_url = itertools.cycle(self.urls)

    def url(self) -> str:
        with self._lock:
            self.requests += 1
            return next(self._next_url)

    def one(self, http: httpx.Client, index: int) -> Outcome:
        headers = {"X-API-KEY": self.key}
        photo = self.photos[index % len(self.photos)]
        started = time.monotonic()
        for _ in range(600):  # 429 (QPS, queue full) and 5xx are retried for a minute
            try:
                answer = http.post(self.url() + TASKS, headers=headers, data={**self.form, "sync": "0"},
                                   files={"image_file": (f"{index}.jpg", photo, "image/jpeg")})
            except httpx.HTTPError as exc:
                error = f"create: {type(exc).__name__}: {exc}"
                time.sleep(0.1)
                continue
            body = answer.json()
            if body.get("status") == 200:
                break
            error = f"create: {body.get('status')} {body.get('message')}"
            if body.get("status") not in (429, 500, 502, 503):
                return Outcome(started, time.monotonic(), 0, error)
            time.sleep(0.1)
        else:
            return Outcome(started, time.monotonic(), 0, error)
        task_id = body["data"]["task_id"]
        deadline = started + 600
        while time.monotonic() < deadline:
            time.sleep(self.poll)
            try:
                data = http.get(f"{self.url()}{TASKS}/{task_id}", headers=headers).json().get("data") or {}
            except (httpx.HTTPError, ValueError):
                continue
            state = data.get("state", 0)
            if state == 1 or state < 0:
                return Outcome(started, time.monotonic(), state, "" if state == 1 else f"state {state}")
        return Outcome(started, time.monotonic(), 0, "no final state after 600 s")

    def run(self, tasks: int, clients: int) -> list[Outcome]:
        counter = itertools.count()
        outcomes: list[Outcome] = []
        lock = threading.Lock()
        failure: list[BaseException] = []

        def client() -> None:
            try:
                with httpx.Client(timeout=120) as http:
                    while (i := next(counter)) < tasks:
                        outcome = self.one(http, i)
                        with lock:
                            outcomes.append(outcome)
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                failure.append(exc)

        threads = [threading.Thread(target=client, daemon=True) for _ in range(min(clients, tasks))]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.5)  # wakes for Ctrl-C
        if failure:
            raise failure[0]
        return outcomes


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def measure(cfg: Config, args: argparse.Namespace, photos: list[bytes]) -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix=f"clothseg-bench-{cfg.name}-"))
    with contextlib.ExitStack() as stack:
        if not args.keep:
            stack.callback(shutil.rmtree, root, ignore_errors=True)
        dep = Deployment(cfg, args.broker, root, stack)
        print(f"[{cfg.name}] starting in {root}", file=sys.stderr, flush=True)
        dep.start()
        form = {"class_type": str(args.class_type), "output_type": str(args.output_type)}
        load = Load(dep.node_urls, dep.key, photos, form, args.poll)
        warm = load.run(cfg.slots * 2, cfg.slots * 2)  # first model runs are slower; not counted
        if bad := [o.error for o in warm if o.state != 1]:
            raise RuntimeError(f"[{cfg.name}] warm-up tasks failed: {bad[:3]}")
        print(f"[{cfg.name}] running {args.tasks} tasks", file=sys.stderr, flush=True)
        load.requests = 0
        before = snapshot(dep)
        wall_start = time.monotonic()
        outcomes = load.run(args.tasks, args.clients)
        wall_end = max((o.ended for o in outcomes), default=time.monotonic())
        after = snapshot(dep)
        for proc in [*dep.nodes, *dep.workers]:
            if not proc.alive():
                raise RuntimeError(f"[{cfg.name}] {proc.name} died during the run: {proc.tail()}")
        times = dep.task_times()
        rss = {"worker": max((peak_rss_mb(w.pid) for w in dep.workers), default=0.0),
               "api_node": max((peak_rss_mb(n.pid) for n in dep.nodes), default=0.0)}
    ok = [o for o in outcomes if o.state == 1]
    latencies = [o.ended - o.started for o in ok]
    wall = wall_end - wall_start
    cpu = cpu_between(before, after)
    done = after.metrics["count"] - before.metrics["count"]
    processing = (after.metrics["seconds"] - before.metrics["seconds"]) / done if done else float("nan")
    # The timed tasks are the last ones created (after the warm-up's).
    timed = sorted(times, key=lambda r: r[0])[-len(outcomes):] if outcomes else []
    waits = [r[1] - r[0] for r in timed if r[1] is not None]
    return {
        "config": cfg.name, "nodes": cfg.nodes, "workers": 0 if cfg.embedded else cfg.workers,
        "embedded": cfg.embedded, "concurrency_per_worker": cfg.concurrency, "engine_threads": cfg.engine_threads,
        "engine_threads_total": cfg.slots * cfg.engine_threads,
        "tasks": len(outcomes), "succeeded": len(ok),
        "failed": len(outcomes) - len(ok), "errors": sorted({o.error for o in outcomes if o.error})[:5],
        "wall_s": round(wall, 2), "tasks_per_s": round(len(ok) / wall, 3) if wall > 0 else None,
        "latency_p50_s": round(percentile(latencies, 0.5), 3), "latency_p95_s": round(percentile(latencies, 0.95), 3),
        "latency_mean_s": round(statistics.fmean(latencies), 3) if latencies else None,
        "processing_mean_s": round(processing, 3), "queue_wait_mean_s": round(statistics.fmean(waits), 3)
        if waits else None,
        "cpu_s": {k: round(v, 2) for k, v in cpu.items() if k not in ("machine_busy_share",)},
        "machine_busy_share": round(cpu["machine_busy_share"], 3),
        "peak_rss_mb": {k: round(v) for k, v in rss.items()},
        "requests": load.requests,
        "api_cpu_ms_per_request": round(cpu["api_nodes"] * 1000 / load.requests, 2)
        if load.requests and not cfg.embedded else None,
        "worker_cpu_s_per_task": round(cpu["workers" if not cfg.embedded else "api_nodes"] / len(ok), 3)
        if ok else None,
    }


# -- output -------------------------------------------------------------------------

def print_table(results: list[dict[str, object]], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.width = max(console.width, 170)  # a pipe or log file gets the whole table
    table = Table(title=f"{args.tasks} async tasks, {args.clients} clients, polling every "
                        f"{args.poll * 1000:g} ms, class_type {args.class_type} output_type {args.output_type}, "
                        f"broker {args.broker}, {CORES} cores")
    for col in ("config", "engine threads", "ok/failed", "tasks/s", "p50 s", "p95 s", "queue wait s",
                "processing s", "engine CPU s/task", "CPU s workers", "CPU s API", "CPU s postgres",
                "CPU s redis/rabbit", "CPU s client", "machine busy"):
        table.add_column(col, justify="left" if col == "config" else "right")
    for r in results:
        cpu = r["cpu_s"]
        assert isinstance(cpu, dict)
        broker_cpu = cpu.get("redis", 0.0) + cpu.get("rabbitmq", 0.0)
        threads = (f"{r['concurrency_per_worker']}x{r['engine_threads']}" if r["embedded"]
                   else f"{r['workers'] * r['concurrency_per_worker']}x{r['engine_threads']}")
        table.add_row(
            str(r["config"]), threads, f"{r['succeeded']}/{r['failed']}", f"{r['tasks_per_s']:.2f}",
            f"{r['latency_p50_s']:.2f}", f"{r['latency_p95_s']:.2f}", f"{r['queue_wait_mean_s']:.2f}",
            f"{r['processing_mean_s']:.2f}", f"{r['worker_cpu_s_per_task']:.2f}",
            "-" if r["embedded"] else f"{cpu['workers']:.1f}",
            f"{cpu['api_nodes']:.1f}" + (" (all)" if r["embedded"] else ""),
            "-" if r["embedded"] else f"{cpu['postgres']:.1f}",
            "-" if r["embedded"] else f"{broker_cpu:.1f}",
            f"{cpu['client']:.1f}", f"{r['machine_busy_share'] * 100:.0f}%",
        )
    console.print(table)
    console.print("engine threads: model runs at once (worker processes x --concurrency; embedded: "
                  "CLOTHSEG_WORKERS) x CLOTHSEG_ENGINE_THREADS each. "
                  "Latency: create -> first poll seeing state 1. processing: clothseg_task_seconds mean "
                  "(worker claim -> final state). engine CPU s/task: CPU of the processes running the model "
                  "(workers; embedded: the server) per succeeded task. CPU: user+system seconds during the timed run.")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=200)
    p.add_argument("--clients", type=int, default=16, help="client threads, each with one task in flight")
    p.add_argument("--poll", type=float, default=0.05, help="seconds between polls of a task")
    p.add_argument("--configs", default=DEFAULT_CONFIGS, help=f"comma-separated (default {DEFAULT_CONFIGS})")
    p.add_argument("--broker", choices=("redis", "amqp"), default="redis")
    p.add_argument("--class-type", type=int, default=4, choices=(1, 2, 3, 4))
    p.add_argument("--output-type", type=int, default=3, choices=(1, 2, 3))
    p.add_argument("--keep", action="store_true", help="keep the temp folders (logs) of each configuration")
    args = p.parse_args()
    try:
        configs = [parse_config(c.strip()) for c in args.configs.split(",") if c.strip()]
    except ValueError as exc:
        p.error(str(exc))
    photos = [path.read_bytes() for path in PHOTOS]
    if not photos:
        sys.exit(f"no photos under {ROOT / 'tests/data/ccp/photos'}")

    # A TERM ends the run like Ctrl-C: every process started is killed, every database dropped.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background
    started = datetime.datetime.now(datetime.UTC)
    results = []
    try:
        for cfg in configs:
            results.append(measure(cfg, args, photos))
            r = results[-1]
            print(f"[{cfg.name}] {r['tasks_per_s']} tasks/s, p50 {r['latency_p50_s']} s, p95 {r['latency_p95_s']} s",
                  file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("interrupted: every process started was stopped", file=sys.stderr)
        sys.exit(130)
    print_table(results, args)
    print(json.dumps({
        "benchmark": "throughput", "date": started.date().isoformat(), "cores": CORES,
        "cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
        "tasks": args.tasks, "clients": args.clients, "poll_s": args.poll, "broker": args.broker,
        "class_type": args.class_type, "output_type": args.output_type,
        "latency": "async: create -> first GET (every poll_s) seeing state 1", "results": results,
    }))


if __name__ == "__main__":
    main()
