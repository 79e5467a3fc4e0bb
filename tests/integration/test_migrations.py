"""The Alembic chain builds exactly the adapters' schema, on SQLite and PostgreSQL, both ways."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from bank.adapters import migrate
from bank.adapters.sql import make_engine
from bank.adapters.tables import metadata


def test_upgrading_an_empty_database_reaches_head_with_no_drift_from_the_tables(database_url):
    engine = make_engine(database_url)
    try:
        assert migrate.current_revision(engine) is None
        migrate.upgrade(engine)
        assert migrate.current_revision(engine) == migrate.head_revision(engine)
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert diff == []
    finally:
        engine.dispose()


def test_the_head_row_exists_once_after_upgrade(database_url):
    engine = make_engine(database_url)
    try:
        migrate.upgrade(engine)
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, next_seq, audit_size FROM ledger_head")).all()
        assert [tuple(r) for r in rows] == [(1, 1, 0)]
    finally:
        engine.dispose()


def test_downgrade_to_base_removes_everything_and_upgrade_rebuilds_it(database_url):
    engine = make_engine(database_url)
    try:
        migrate.upgrade(engine)
        migrate.downgrade(engine, "base")
        remaining = set(inspect(engine).get_table_names()) - {"alembic_version"}
        assert remaining == set()
        migrate.upgrade(engine)
        assert set(inspect(engine).get_table_names()) >= set(metadata.tables)
    finally:
        engine.dispose()


def test_upgrading_twice_is_a_no_op(database_url):
    engine = make_engine(database_url)
    try:
        migrate.upgrade(engine)
        migrate.upgrade(engine)
        assert migrate.current_revision(engine) == migrate.head_revision(engine)
    finally:
        engine.dispose()
