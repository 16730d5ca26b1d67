"""The relational database (SQLite by default, any SQLAlchemy URL later)."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import DeclarativeBase, sessionmaker


class Base(DeclarativeBase):
    pass


def open_database(url: str) -> sessionmaker:
    """Session factory for ``url``; creates the tables on first use."""
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}
                           if url.startswith("sqlite") else {})
    if url.startswith("sqlite"):
        _sqlite_pragmas(engine)
    # The models register themselves on Base when imported.
    import clothseg.accounts.models  # noqa: F401
    import clothseg.tasks.models  # noqa: F401

    Base.metadata.create_all(engine)
    return sessionmaker(engine, expire_on_commit=False)


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        cur = dbapi_conn.cursor()
        # WAL: the CLI and the server (readers and a writer) work side by side.
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()
