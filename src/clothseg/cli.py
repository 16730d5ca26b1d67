"""The ``clothseg`` command: serve, keys, segment, eval."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from clothseg.config import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Self-hosted clothing segmentation.")
keys_app = typer.Typer(no_args_is_help=True, help="Manage API keys.")
app.add_typer(keys_app, name="keys")

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Database and results folder [env: CLOTHSEG_DATA_DIR]"),
]
# Freed buffers of this size or more go back to the system (return_freed_memory).
MMAP_THRESHOLD = 8 * 1024 * 1024


def _settings(data_dir: Path | None) -> Settings:
    """Raises ValueError for a CLOTHSEG_* setting that does not parse or a half-configured setup."""
    settings = Settings()
    return dataclasses.replace(settings, data_dir=data_dir) if data_dir else settings


def _open_accounts(settings: Settings):  # type: ignore[no-untyped-def]
    from clothseg.accounts import Accounts
    from clothseg.database import open_database

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return Accounts(open_database(settings.database_url))


def _checked_settings(data_dir: Path | None) -> Settings:
    """The settings; one that does not parse ends the command (a line on stderr, exit code 2)."""
    try:
        return _settings(data_dir)
    except ValueError as exc:
        typer.echo(f"invalid configuration: {exc}", err=True)
        raise typer.Exit(2) from None


def _accounts(data_dir: Path | None):  # type: ignore[no-untyped-def]
    from clothseg.database import SchemaOutOfDate

    settings = _checked_settings(data_dir)
    try:
        return _open_accounts(settings), settings
    except SchemaOutOfDate as exc:
        _refuse(str(exc))


def _refuse(message: str) -> NoReturn:
    """End the command as `serve` refuses to start: ``message`` as one JSON log line on stderr, exit code 2."""
    import logging

    from clothseg.observability import configure_logging

    configure_logging()  # as `serve` has already: JSON lines on stderr
    logging.getLogger("clothseg.cli").critical(message)
    raise typer.Exit(2)


db_app = typer.Typer(no_args_is_help=True, help="The database schema (Alembic migrations).")
app.add_typer(db_app, name="db")


def _database_url(data_dir: Path | None) -> str:
    settings = _checked_settings(data_dir)
    url = settings.database_url
    if not settings.shared_database:
        settings.data_dir.mkdir(parents=True, exist_ok=True)  # where the SQLite file goes
    return url


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDir = None) -> None:
    """Upgrade the database schema to this version's; run it once before starting a new version's
    nodes on a shared database (SQLite upgrades itself at every start)."""
    from alembic.util import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from clothseg.database import current_revision, masked_url, upgrade_database

    url = _database_url(data_dir)
    typer.echo(f"database: {masked_url(url)}")
    try:
        before = current_revision(url)
        revision = upgrade_database(url)
    except (SQLAlchemyError, CommandError) as exc:
        typer.echo(f"cannot upgrade the database: {exc}", err=True)
        raise typer.Exit(1) from None
    change = "already there" if before == revision else f"upgraded from {before or 'none'}"
    typer.echo(f"schema revision {revision} (head), {change}")


@db_app.command("current")
def db_current(data_dir: DataDir = None) -> None:
    """Print the database's schema revision and the one this version needs (head)."""
    from sqlalchemy.exc import SQLAlchemyError

    from clothseg.database import current_revision, head_revision, masked_url

    url = _database_url(data_dir)
    typer.echo(f"database: {masked_url(url)}")
    try:
        current = current_revision(url)
    except SQLAlchemyError as exc:
        typer.echo(f"cannot read the database: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"current: {current or 'none'}")
    typer.echo(f"head: {head_revision()}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    data_dir: DataDir = None,
) -> None:
    """Run the API server (embedded mode: one process, SQLite, local results).  Every line it writes is JSON."""
    import logging

    import uvicorn

    from clothseg.api import create_app
    from clothseg.database import SchemaOutOfDate
    from clothseg.observability import configure_logging, relay_native_output

    relay_native_output()  # before the model's native libraries load and write to stderr
    configure_logging()
    return_freed_memory()
    log = logging.getLogger("clothseg.cli")
    try:
        settings = _settings(data_dir)
    except ValueError as exc:
        _refuse(f"invalid configuration: {exc}")
    log.info("configuration", extra=settings.describe())
    try:
        accounts = _open_accounts(settings)
    except SchemaOutOfDate as exc:
        _refuse(str(exc))
    # Embedded only: nodes sharing a database would each make one; there, `clothseg keys create`.
    if not settings.shared_database and not accounts.list():
        key, _ = accounts.create(settings.default_credits, settings.default_qps, name="first key")
        log.info(
            f"created an API key with {settings.default_credits} credits; it is shown only this once",
            extra={"api_key": key})
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning", log_config=None)


def return_freed_memory() -> None:
    """Have glibc hand buffers of MMAP_THRESHOLD bytes or more (decoded uploads, full-size
    masks) back to the system when they are freed.  By default it raises its mmap
    threshold after the first large free, and from then on such buffers stay in each
    thread's heap: a server under 8 clients' hostile uploads peaked at 898 MB instead of
    690 MB.  Smaller buffers (the network's activations at the working size) stay in the
    heap: at a 128 kB threshold every call paid for some 26,000 page faults, a third of
    quality 1's time.  A no-op where the C library has no mallopt."""
    import contextlib
    import ctypes
    import ctypes.util

    m_mmap_threshold = -3  # from glibc's malloc.h
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c")).mallopt(m_mmap_threshold, MMAP_THRESHOLD)


@app.command()
def worker(
    data_dir: DataDir = None,
    concurrency: Annotated[int | None, typer.Option(
        help="Tasks at once, sharing one loaded model [env: CLOTHSEG_WORKERS]")] = None,
    metrics_port: Annotated[int | None, typer.Option(
        help="Prometheus metrics port, 0 for none [env: CLOTHSEG_METRICS_PORT]")] = None,
) -> None:
    """Run a worker of the scale-out: takes tasks from CLOTHSEG_BROKER_URL and segments them.
    Every line it writes is JSON."""
    import logging

    from prometheus_client import start_http_server

    from clothseg.database import SchemaOutOfDate
    from clothseg.observability import QUEUE_DEPTH, configure_logging, relay_native_output
    from clothseg.tasks.celery_queue import CeleryDispatcher, make_celery, register_worker_task
    from clothseg.wiring import build_services

    relay_native_output()
    configure_logging()
    return_freed_memory()
    log = logging.getLogger("clothseg.cli")
    try:
        settings = _settings(data_dir)
        if not settings.distributed:
            raise ValueError("a worker takes its tasks from a broker: set CLOTHSEG_BROKER_URL (redis://... or "
                             "amqp://...); the embedded `clothseg serve` runs its own workers")
    except ValueError as exc:
        _refuse(f"invalid configuration: {exc}")
    settings = dataclasses.replace(settings, workers=concurrency or settings.workers,
                                   metrics_port=settings.metrics_port if metrics_port is None else metrics_port)
    log.info("configuration", extra=settings.describe())
    celery = make_celery(settings)
    try:
        services = build_services(settings, CeleryDispatcher(celery))
    except SchemaOutOfDate as exc:
        _refuse(str(exc))
    if settings.metrics_port:  # before the model loads: a port in use stops the worker at once
        QUEUE_DEPTH.set_function(services.tasks.queue_depth)  # read from the database at each scrape
        try:
            start_http_server(settings.metrics_port)
        except OSError as exc:
            _refuse(f"cannot serve metrics on port {settings.metrics_port}: {exc.strerror}; give each worker "
                    "on a machine its own --metrics-port (or 0 for none), or run one worker with --concurrency N")
    services.tasks.engine()  # load the model before taking a task
    services.tasks.start()
    register_worker_task(celery, services.tasks.run)
    assert services.roster is not None  # a worker is always distributed
    services.roster.start_reporting()
    log.info("worker ready", extra={"concurrency": settings.workers, "metrics_port": settings.metrics_port})
    # Threads share the one loaded model; the model's own threads use the cores.
    celery.Worker(pool="threads", concurrency=settings.workers, quiet=True, loglevel="WARNING",
                  without_heartbeat=False, without_mingle=True, without_gossip=True).start()
    services.roster.stop_reporting()
    services.tasks.stop()


@keys_app.command("create")
def keys_create(
    credits: Annotated[int, typer.Option(help="Starting credit balance")] = 1000,
    qps: Annotated[float, typer.Option(help="Requests per second allowed")] = 2.0,
    name: Annotated[str, typer.Option(help="A label for the key")] = "",
    data_dir: DataDir = None,
) -> None:
    """Create a key; the key is printed alone on the last line."""
    accounts, _ = _accounts(data_dir)
    key, info = accounts.create(credits, qps, name)
    typer.echo(f"key id {info.id}, {info.credits} credits, {info.qps:g} QPS")
    typer.echo(key)


@keys_app.command("list")
def keys_list(data_dir: DataDir = None) -> None:
    """List keys (id, prefix, credits, QPS, state)."""
    from rich.console import Console
    from rich.table import Table

    accounts, _ = _accounts(data_dir)
    table = Table("id", "prefix", "name", "credits", "reserved", "qps", "state")
    for k in accounts.list():
        table.add_row(str(k.id), k.prefix, k.name, str(k.credits), str(k.reserved), f"{k.qps:g}",
                      "revoked" if k.revoked else "active")
    Console().print(table)


def _find(accounts, ident: str):  # type: ignore[no-untyped-def]
    info = accounts.find(ident)
    if info is None:
        typer.echo(f"no single key matches {ident!r}", err=True)
        raise typer.Exit(1)
    return info


@keys_app.command("revoke")
def keys_revoke(key: Annotated[str, typer.Argument(help="Key id, prefix or the key")],
                data_dir: DataDir = None) -> None:
    """Revoke a key: it is refused (401) from now on."""
    accounts, _ = _accounts(data_dir)
    info = _find(accounts, key)
    accounts.revoke(info.id)
    typer.echo(f"revoked key {info.id} ({info.prefix}...)")


@keys_app.command("credit")
def keys_credit(key: Annotated[str, typer.Argument(help="Key id, prefix or the key")],
                amount: Annotated[int, typer.Argument(help="Credits to add (negative to remove)")],
                data_dir: DataDir = None) -> None:
    """Add credits to a key."""
    accounts, _ = _accounts(data_dir)
    info = accounts.add_credits(_find(accounts, key).id, amount)
    typer.echo(f"key {info.id} now has {info.credits} credits")


@app.command()
def segment(
    paths: Annotated[list[Path], typer.Argument(help="Image files and/or folders (searched recursively)")],
    out: Annotated[Path, typer.Option(help="Output folder: OUT/<image stem>/<class>.png")],
    class_type: Annotated[int, typer.Option(min=1, max=4)] = 4,
    output_type: Annotated[int, typer.Option(min=1, max=3)] = 1,
    quality: Annotated[int, typer.Option(min=1, max=2)] = 1,
    detail_mode: Annotated[int, typer.Option(min=1, max=2)] = 1,
    server: Annotated[str | None, typer.Option(help="API base URL; without it the engine runs in-process")] = None,
    key: Annotated[str | None, typer.Option(help="API key for --server [env: CLOTHSEG_API_KEY]")] = None,
    qps: Annotated[float, typer.Option(help="Task creations per second (the key's QPS limit)")] = 2.0,
    concurrency: Annotated[int, typer.Option(help="Images in flight at once with --server")] = 4,
) -> None:
    """Segment images: OUT/<stem>/<class>.png and clothes.zip; already complete images are skipped."""
    from rich.console import Console

    from clothseg.batch import discover, expected_outputs, run_batch, summary_table

    images = discover(paths)
    options = {"class_type": class_type, "output_type": output_type, "quality": quality,
               "detail_mode": detail_mode}
    if server:
        segmenter = _server_segmenter(server, key or os.environ.get("CLOTHSEG_API_KEY"), qps, options)
        workers = concurrency
    else:
        segmenter, workers = _local_segmenter(options), 1  # the engine already uses every core
    outcomes = run_batch(images, out, segmenter, expected_outputs(class_type, output_type), workers)
    Console().print(summary_table(outcomes))
    failed = [o for o in outcomes if o.status == "failed"]
    for o in failed:  # one plain line per failure, for logs and grep
        typer.echo(f"failed: {o.path}: {o.detail}", err=True)
    if failed:
        raise typer.Exit(1)


def _server_segmenter(server: str, key: str | None, qps: float, options: dict[str, int]):  # type: ignore[no-untyped-def]
    from clothseg.batch import QpsGate
    from clothseg.client import Client

    if not key:
        raise typer.BadParameter("--key (or CLOTHSEG_API_KEY) is required with --server")
    client = Client(server, key)
    gate = QpsGate(qps)

    def run(path: Path) -> tuple[dict[str, bytes], bytes | None]:
        gate.wait()
        result = client.segment(path, **options, timeout=600)
        return result.masks, result.zip

    return run


def _local_segmenter(options: dict[str, int]):  # type: ignore[no-untyped-def]
    from clothseg.engine import SegmentOptions, load_engine
    from clothseg.imaging import decode_image, encode_results
    from clothseg.tasks.service import NO_PERSON

    engine = load_engine(os.environ.get("CLOTHSEG_MODEL") or None)
    opts = SegmentOptions(**options)

    def run(path: Path) -> tuple[dict[str, bytes], bytes | None]:
        seg = engine.segment(decode_image(path.read_bytes()), opts)
        if seg.empty:
            raise ValueError(NO_PERSON)
        return encode_results(seg.class_masks, seg.clothing_masks, opts.output_type in (2, 3))

    return run


@app.command("eval")
def eval_command(
    ccp: Annotated[Path, typer.Option(help="Folder in CCP's layout")],
    quality: Annotated[int, typer.Option(min=1, max=2)] = 1,
    split: Annotated[str, typer.Option(help="all: every annotated photo; val: our validation split")] = "all",
    limit: Annotated[int, typer.Option(help="Evaluate only the first N photos (0 = all)")] = 0,
    framing: Annotated[str, typer.Option(help="full, wide, far, upper, lower, square, gray, dark, warm, blurred, two, "
                                              "close, smaller, group, studio, tilted, sideways, upsidedown (the photos "
                                              "re-framed), or noperson (people-free images to refuse)")] = "full",
    masks: Annotated[bool, typer.Option(help="Check the API's masks instead: boundary F-score per class, "
                                             "head holes, others, garment consistency")] = False,
    detail_mode: Annotated[int, typer.Option(min=1, max=2, help="detail_mode of --masks")] = 1,
    baseline_quality: Annotated[int, typer.Option(min=0, max=2, help="Also score this quality and print "
                                                  "95% paired intervals of the difference (0 = no)")] = 0,
    baseline_model: Annotated[str, typer.Option(help="Also score this model (as CLOTHSEG_MODEL, or 'bundled') "
                                                "and print 95% paired intervals of the difference")] = "",
) -> None:
    """mIoU over the nine eval classes; the last line is one JSON object."""
    from clothseg.engine import SegmentOptions, load_engine
    from clothseg.engine.evaluation import annotated_stems, check_masks, evaluate, iter_ccp, validation_split
    from clothseg.engine.framings import people_free_images

    stems = annotated_stems(ccp)
    if split == "val":
        stems = validation_split(stems)[1]
    elif split != "all":
        raise typer.BadParameter("split must be 'all' or 'val'")
    if limit:
        stems = stems[:limit]
    engine = load_engine(os.environ.get("CLOTHSEG_MODEL") or None)
    if framing == "noperson":
        images = people_free_images(list(iter_ccp(ccp, stems)))
        accepted = [name for name, rgb in images if not engine.segment(rgb, SegmentOptions(quality=quality)).empty]
        typer.echo(json.dumps({"images": len(images), "refused": len(images) - len(accepted), "accepted": accepted}))
        return
    try:
        if masks:
            options = SegmentOptions(quality=quality, detail_mode=detail_mode)
            report = check_masks(engine, ccp, stems, options, framing).as_dict()
        else:
            result = evaluate(engine, ccp, stems, quality, framing)
            report = result.as_dict()
            if baseline_quality or baseline_model:
                other = engine
                if baseline_model:
                    other = load_engine(None if baseline_model == "bundled" else baseline_model)
                baseline = evaluate(other, ccp, stems, baseline_quality or quality, framing)
                report["baseline"] = baseline.as_dict()
                report["difference_95"] = result.intervals(baseline=baseline)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(json.dumps({"framing": framing, **report}))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
