"""Alembic's environment for clothseg's schema.

:mod:`clothseg.database` runs it with an open connection, in a transaction it holds a
lock in, as ``config.attributes["connection"]``; run by hand (``alembic`` with
script_location pointing here) it connects to ``sqlalchemy.url`` itself.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine, pool

from clothseg.database import models_metadata

config = context.config
target_metadata = models_metadata()


def run_migrations(connection: Connection) -> None:
    # Batch mode: SQLite alters most things only by copying the table, which batch operations do.
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():  # a no-op inside the caller's transaction
        context.run_migrations()


def run_offline() -> None:
    """``alembic upgrade --sql``: the SQL, printed instead of run."""
    url = config.get_main_option("sqlalchemy.url") or ""
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=url.startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "", poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            run_migrations(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
