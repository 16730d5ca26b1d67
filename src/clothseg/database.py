"""The relational database: SQLite by default, PostgreSQL for several processes.

Its schema is kept by the Alembic migrations in :mod:`clothseg.migrations`: SQLite (the
embedded, one-process default) is upgraded whenever it is opened; a shared database is
upgraded once by ``clothseg db upgrade`` and every node refuses one that is not at the
revision it needs (:class:`SchemaOutOfDate`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, MetaData, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, sessionmaker

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
# What a database made by clothseg before it had migrations (tables from create_all,
# no alembic_version table) holds: it is stamped with this revision, then upgraded.
PRE_MIGRATIONS_REVISION = "0001"
# PostgreSQL advisory lock held while migrating, so that upgrades started at once run one after the other.
_MIGRATION_LOCK = 0x636C_6F74_6873_6567  # "clothseg"


class Base(DeclarativeBase):
    pass


class SchemaOutOfDate(RuntimeError):
    """A shared database whose schema is not at the revision this version of clothseg needs."""


def engine_url(url: str) -> str:
    """``url`` with our PostgreSQL driver (psycopg 3) where it names none, so a plain
    ``postgresql://user@host:port/db`` (or ``postgres://``, as many hosts print it) works."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1) if url.startswith("postgres://") else url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def masked_url(url: str) -> str:
    """``url`` as it may be printed: the password replaced by ***."""
    return make_url(url).render_as_string(hide_password=True)


def models_metadata() -> MetaData:
    """``Base.metadata`` with every model registered on it."""
    # The models register themselves on Base when imported.
    import clothseg.accounts.models  # noqa: F401
    import clothseg.storage.models  # noqa: F401
    import clothseg.tasks.models  # noqa: F401

    return Base.metadata


def open_database(url: str) -> sessionmaker:
    """Session factory for ``url``.  SQLite is upgraded to the schema this version needs
    (creating the tables on first use); any other database must be at that revision
    already, else :class:`SchemaOutOfDate` says to run ``clothseg db upgrade``."""
    engine = _create_engine(url)
    models_metadata()
    try:
        if engine.dialect.name == "sqlite":
            before, after = _upgrade(engine, url)
            if before != after:
                log.info("database schema upgraded", extra={"from_revision": before, "to_revision": after})
        else:
            _check_at_head(engine, url)
    except BaseException:
        engine.dispose()
        raise
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    """Alembic's configuration for ``url``, made in code: no alembic.ini is needed."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", engine_url(url).replace("%", "%%"))  # % is ini interpolation
    return config


def head_revision() -> str:
    """The revision of the schema this version of clothseg needs."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert head is not None, "no migrations found"
    return head


def current_revision(url: str) -> str | None:
    """The revision the database at ``url`` is at; None for an empty database or one
    made before clothseg had migrations."""
    engine = _create_engine(url)
    try:
        with engine.connect() as conn:
            return _current(conn)
    finally:
        engine.dispose()


def upgrade_database(url: str) -> str:
    """Apply the migrations up to head and return the revision reached.  A database made
    by clothseg before it had migrations is stamped ``0001`` first, keeping its rows."""
    engine = _create_engine(url)
    try:
        return _upgrade(engine, url)[1]
    finally:
        engine.dispose()


def _create_engine(url: str) -> Engine:
    url = engine_url(url)
    sqlite = url.startswith("sqlite")
    # pool_pre_ping: a pooled connection that a database restart closed is replaced, not handed out.
    engine = create_engine(url, pool_pre_ping=not sqlite,
                           connect_args={"check_same_thread": False, "timeout": 30} if sqlite else {})
    if sqlite:
        _sqlite_pragmas(engine)
    return engine


def _upgrade(engine: Engine, url: str) -> tuple[str | None, str]:
    """(revision before, revision after) upgrading to head, all in one transaction that
    holds a lock, so that processes upgrading at once wait for each other."""
    from alembic import command

    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            # The database's write lock from the start (not at the first write), so a second
            # process reads the version only once the first has committed.  The sqlite3 module
            # begins no transaction of its own inside one that is open.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        before = _current(conn)
        config = alembic_config(url)
        config.attributes["connection"] = conn
        if before is None and _made_before_migrations(conn):
            command.stamp(config, PRE_MIGRATIONS_REVISION)
        command.upgrade(config, "head")
        after = _current(conn)
        conn.commit()
    assert after is not None
    return before, after


def _current(conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def _made_before_migrations(conn: Connection) -> bool:
    """The tables of clothseg before migrations, without Alembic's version table."""
    tables = set(inspect(conn).get_table_names())
    return "api_keys" in tables and "alembic_version" not in tables


def _check_at_head(engine: Engine, url: str) -> None:
    from alembic.script import ScriptDirectory

    with engine.connect() as conn:
        current = _current(conn)
        made_before_migrations = current is None and _made_before_migrations(conn)
    scripts = ScriptDirectory(str(MIGRATIONS))
    head = scripts.get_current_head()
    if current == head:
        return
    database = f"the database {masked_url(url)}"
    upgrade = (f"this version of clothseg needs revision {head}: run `clothseg db upgrade` with the same "
               f"CLOTHSEG_DATABASE_URL (once, from one machine), then start this version")
    if current is None:
        at = ("has clothseg's tables from before schema migrations (revision none, to be stamped "
              f"{PRE_MIGRATIONS_REVISION})" if made_before_migrations else "has no clothseg schema (revision none)")
        raise SchemaOutOfDate(f"{database} {at}; {upgrade}")
    if current not in {script.revision for script in scripts.walk_revisions()}:
        raise SchemaOutOfDate(f"{database} is at schema revision {current}, which this version of clothseg does "
                              f"not know (it needs {head}): a newer clothseg has upgraded it; run that version")
    raise SchemaOutOfDate(f"{database} is at schema revision {current}; {upgrade}")


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        cur = dbapi_conn.cursor()
        # WAL: the CLI and the server (readers and a writer) work side by side.
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()
