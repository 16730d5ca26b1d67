"""The ``clothseg`` command: serve, keys, segment, eval."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Annotated

import typer

from clothseg.config import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Self-hosted clothing segmentation.")
keys_app = typer.Typer(no_args_is_help=True, help="Manage API keys.")
app.add_typer(keys_app, name="keys")

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Database and results folder [env: CLOTHSEG_DATA_DIR]"),
]


def _settings(data_dir: Path | None) -> Settings:
    settings = Settings()
    return dataclasses.replace(settings, data_dir=data_dir) if data_dir else settings


def _accounts(data_dir: Path | None):  # type: ignore[no-untyped-def]
    from clothseg.accounts import Accounts
    from clothseg.database import open_database

    settings = _settings(data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return Accounts(open_database(settings.database_url)), settings


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    data_dir: DataDir = None,
) -> None:
    """Run the API server (embedded mode: one process, SQLite, local results)."""
    import uvicorn

    from clothseg.api import create_app
    from clothseg.observability import configure_logging

    accounts, settings = _accounts(data_dir)
    if not accounts.list():
        key, _ = accounts.create(settings.default_credits, settings.default_qps, name="first key")
        typer.echo(f"Created an API key with {settings.default_credits} credits (shown once):\n{key}")
    configure_logging()
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")


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
) -> None:
    """mIoU over the nine eval classes; the last line is one JSON object."""
    from clothseg.engine import load_engine
    from clothseg.engine.evaluation import annotated_stems, evaluate, validation_split

    stems = annotated_stems(ccp)
    if split == "val":
        stems = validation_split(stems)[1]
    elif split != "all":
        raise typer.BadParameter("split must be 'all' or 'val'")
    if limit:
        stems = stems[:limit]
    result = evaluate(load_engine(os.environ.get("CLOTHSEG_MODEL") or None), ccp, stems, quality)
    typer.echo(json.dumps(result.as_dict()))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
