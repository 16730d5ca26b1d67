"""The database schema's history as Alembic migrations, applied by
:func:`clothseg.database.upgrade_database` (``clothseg db upgrade``; SQLite at every start).

A new revision: change the models, then write ``versions/NNNN_<what>.py`` by hand with
the next number as its revision id (``alembic revision`` with this folder as its
script_location renders the template), and let ``tests/test_migrations.py`` check that
the upgraded schema matches the models on SQLite and PostgreSQL.
"""
