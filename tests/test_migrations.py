"""Schema migrations (Alembic) on SQLite and on a real PostgreSQL: `clothseg db upgrade`
reaches a schema identical to the models', upgrades a database made before clothseg
had migrations, and the commands refuse a shared database that is not upgraded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import (
    Boolean,
    Column,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    insert,
    select,
    text,
)

from clothseg.database import (
    SchemaOutOfDate,
    alembic_config,
    current_revision,
    engine_url,
    head_revision,
    models_metadata,
    open_database,
)
from tests.services import postgres_database

HEAD = "0002"


@dataclass
class Database:
    """A fresh database and the environment that points the CLI at it."""

    kind: str
    url: str
    data_dir: Path

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOTHSEG_")}
        if self.kind == "postgresql":
            env["CLOTHSEG_DATABASE_URL"] = self.url
        return env  # SQLite: the default, <data dir>/clothseg.db

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "clothseg.cli", *args, "--data-dir", str(self.data_dir)],
                              env=self.env, capture_output=True, text=True, check=check, timeout=120)

    def engine(self) -> Engine:
        return create_engine(engine_url(self.url))


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        yield Database("sqlite", f"sqlite:///{tmp_path / 'clothseg.db'}", tmp_path)
    else:
        with postgres_database() as url:
            yield Database("postgresql", url, tmp_path)


@pytest.fixture
def postgresql(tmp_path: Path) -> Iterator[Database]:
    with postgres_database() as url:
        yield Database("postgresql", url, tmp_path)


def differences(db: Database) -> list[Any]:
    """What autogenerate finds between the database's schema and the models'."""
    engine = db.engine()
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), models_metadata())
    finally:
        engine.dispose()


def summary(diffs: list[Any]) -> set[tuple[str, str]]:
    """(operation, table / column / index name) of each difference."""
    out: set[tuple[str, str]] = set()
    for diff in diffs:
        for op in diff if isinstance(diff, list) else [diff]:  # modify_* come in lists
            named = [x for x in op[1:] if hasattr(x, "name")]
            out.add((op[0], named[-1].name if named else str(op[1:])))
    return out


def old_schema() -> MetaData:
    """The tables clothseg made with create_all before it had migrations (the models at 5ee683a)."""
    md = MetaData()
    Table("api_keys", md,
          Column("id", Integer, primary_key=True),
          Column("key_hash", String(64), unique=True, index=True, nullable=False),
          Column("prefix", String(12), nullable=False),
          Column("name", String(100), nullable=False),
          Column("credits", Integer, nullable=False),
          Column("reserved", Integer, nullable=False),
          Column("qps", Float, nullable=False),
          Column("revoked", Boolean, nullable=False),
          Column("created_at", Float, nullable=False))
    Table("tasks", md,
          Column("id", String(36), primary_key=True),
          Column("key_id", Integer, index=True, nullable=False),
          Column("state", Integer, index=True, nullable=False),
          Column("progress", Integer, nullable=False),
          Column("message", Text, nullable=False),
          Column("image_url", Text, nullable=True),
          Column("class_type", Integer, nullable=False),
          Column("output_type", Integer, nullable=False),
          Column("quality", Integer, nullable=False),
          Column("detail_mode", Integer, nullable=False),
          Column("return_base64", Boolean, nullable=False),
          Column("attempts", Integer, nullable=False),
          Column("class_names", Text, nullable=False),
          Column("has_zip", Boolean, nullable=False),
          Column("created_at", Float, index=True, nullable=False),
          Column("processed_at", Float, nullable=True),
          Column("completed_at", Float, nullable=True, index=True))
    Table("idempotency_keys", md,
          Column("key_id", Integer, primary_key=True),
          Column("idempotency_key", String(255), primary_key=True),
          Column("request_hash", String(64), nullable=False),
          Column("task_id", String(36), index=True, nullable=False))
    return md


KEY = {"key_hash": "a" * 64, "prefix": "cs_oldkey01", "name": "old", "credits": 70, "reserved": 3, "qps": 2.0,
       "revoked": False, "created_at": 1700000000.0}
TASK = {"id": "11111111-2222-3333-4444-555555555555", "key_id": 1, "state": 1, "progress": 100, "message": "",
        "image_url": None, "class_type": 4, "output_type": 1, "quality": 1, "detail_mode": 1,
        "return_base64": False, "attempts": 1, "class_names": "clothes", "has_zip": False,
        "created_at": 1700000001.0, "processed_at": 1700000002.0, "completed_at": 1700000003.0}


def make_old_database(db: Database) -> None:
    """A database as an older clothseg left it: its tables, a key and a task, no alembic_version."""
    md = old_schema()
    engine = db.engine()
    try:
        md.create_all(engine)
        with engine.begin() as conn:
            conn.execute(insert(md.tables["api_keys"]).values(id=1, **KEY))
            conn.execute(insert(md.tables["tasks"]).values(**TASK))
    finally:
        engine.dispose()


def json_lines(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


def test_upgrade_reaches_head_and_the_schema_matches_the_models(database: Database) -> None:
    assert head_revision() == HEAD
    out = database.cli("db", "upgrade").stdout
    shown = "postgresql://postgres@127.0.0.1" if database.kind == "postgresql" else str(database.data_dir)
    assert out.splitlines()[0].startswith("database: ") and shown in out.splitlines()[0]
    assert f"schema revision {HEAD} (head), upgraded from none" in out
    if database.kind == "sqlite":
        assert (database.data_dir / "clothseg.db").is_file()
    assert current_revision(database.url) == HEAD
    assert differences(database) == []
    current = database.cli("db", "current").stdout.splitlines()
    assert current[1:] == [f"current: {HEAD}", f"head: {HEAD}"]


def test_upgrading_twice_is_a_no_op(database: Database) -> None:
    database.cli("db", "upgrade")
    out = database.cli("db", "upgrade").stdout
    assert f"schema revision {HEAD} (head), already there" in out
    engine = database.engine()
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [HEAD]
    finally:
        engine.dispose()
    assert differences(database) == []


def test_the_comparison_sees_what_0002_adds(database: Database) -> None:
    """At 0001 the models differ by exactly what 0002 adds: the comparison above is not vacuous."""
    command.upgrade(alembic_config(database.url), "0001")
    assert current_revision(database.url) == "0001"
    assert summary(differences(database)) == {
        ("add_table", "signing_secrets"), ("add_column", "owner"), ("add_column", "lease_expires_at"),
        ("add_index", "ix_tasks_lease_expires_at")}


def test_a_database_made_before_migrations_is_stamped_and_upgraded(database: Database) -> None:
    make_old_database(database)
    assert current_revision(database.url) is None
    assert f"schema revision {HEAD} (head), upgraded from none" in database.cli("db", "upgrade").stdout
    assert current_revision(database.url) == HEAD
    assert differences(database) == []
    md = models_metadata()
    engine = database.engine()
    try:
        with engine.connect() as conn:
            key = conn.execute(select(md.tables["api_keys"])).mappings().one()
            task = conn.execute(select(md.tables["tasks"])).mappings().one()
    finally:
        engine.dispose()
    assert dict(key) == {"id": 1, **KEY}
    assert dict(task) == {**TASK, "owner": None, "lease_expires_at": None}


def test_sqlite_upgrades_itself_when_opened(tmp_path: Path) -> None:
    """The embedded default: a command (or `serve`) on an older SQLite database just works, rows kept."""
    db = Database("sqlite", f"sqlite:///{tmp_path / 'clothseg.db'}", tmp_path)
    make_old_database(db)
    assert KEY["prefix"] in db.cli("keys", "list").stdout
    assert current_revision(db.url) == HEAD
    assert differences(db) == []
    command.downgrade(alembic_config(db.url), "0001")  # and one at 0001 through open_database itself
    open_database(db.url).kw["bind"].dispose()
    assert current_revision(db.url) == HEAD


@pytest.mark.parametrize("state", ["empty", "made before migrations", "0001"])
def test_postgresql_not_at_head_is_refused_when_opened(postgresql: Database, state: str) -> None:
    if state == "made before migrations":
        make_old_database(postgresql)
    elif state == "0001":
        command.upgrade(alembic_config(postgresql.url), "0001")
    with pytest.raises(SchemaOutOfDate) as refused:
        open_database(postgresql.url)
    message = str(refused.value)
    assert isinstance(refused.value, RuntimeError)
    assert "clothseg db upgrade" in message and "CLOTHSEG_DATABASE_URL" in message
    assert f"needs revision {HEAD}" in message
    assert {"empty": "revision none", "made before migrations": "before schema migrations",
            "0001": "is at schema revision 0001"}[state] in message
    assert current_revision(postgresql.url) == (None if state != "0001" else "0001")  # nothing was changed


def test_postgresql_newer_than_this_version_is_refused(postgresql: Database) -> None:
    postgresql.cli("db", "upgrade")
    engine = postgresql.engine()
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    finally:
        engine.dispose()
    with pytest.raises(SchemaOutOfDate, match="9999, which this version of clothseg does not know"):
        open_database(postgresql.url)


@pytest.mark.parametrize("args", [["serve", "--port", "0"], ["keys", "list"]], ids=["serve", "keys list"])
def test_commands_refuse_a_postgresql_database_never_upgraded(postgresql: Database, args: list[str]) -> None:
    done = postgresql.cli(*args, check=False)
    assert done.returncode == 2, done.stderr
    records = json_lines(done.stderr)  # every line JSON
    refusals = [r for r in records if "clothseg db upgrade" in r["message"]]
    assert len(refusals) == 1 and refusals[0]["level"] == "CRITICAL", records
    assert "revision none" in refusals[0]["message"] and HEAD in refusals[0]["message"]
    if args[0] == "keys":
        assert records == refusals  # nothing but the one line
    assert current_revision(postgresql.url) is None


def test_upgrades_started_at_once_wait_for_each_other(database: Database) -> None:
    cmd = [sys.executable, "-m", "clothseg.cli", "db", "upgrade", "--data-dir", str(database.data_dir)]
    procs = [subprocess.Popen(cmd, env=database.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    assert differences(database) == []

