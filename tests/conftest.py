"""Shared fixtures. Integration tests run against SQLite *and* PostgreSQL on every run.

PostgreSQL: a server on 127.0.0.1:5432 with trust auth (override with BANK_TEST_PG_URL, an
admin URL to a maintenance database). Each test session creates its own databases and drops
them at the end; a missing server is a test failure, not a skip, unless BANK_TEST_SKIP_PG=1.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from bank.adapters.clock import FixedClock
from bank.adapters.migrate import upgrade
from bank.adapters.sql import SqlUnitOfWork, make_engine

PG_ADMIN_URL = os.environ.get("BANK_TEST_PG_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
SKIP_PG = os.environ.get("BANK_TEST_SKIP_PG") == "1"

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)]


def _pg_url(name: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


class PgDatabases:
    """Creates throw-away PostgreSQL databases and drops them all at the end of the session."""

    def __init__(self) -> None:
        self.admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        self.created: list[str] = []

    def create(self) -> str:
        name = f"bank_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        return _pg_url(name)

    def drop_all(self) -> None:
        with self.admin.connect() as conn:
            for name in self.created:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[PgDatabases]:
    if SKIP_PG:
        pytest.skip("BANK_TEST_SKIP_PG=1")
    databases = PgDatabases()
    yield databases
    databases.drop_all()


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database URL of the backend named by the `backend` parameter."""
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    databases: PgDatabases = request.getfixturevalue("pg_databases")
    return databases.create()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A migrated database."""
    eng = make_engine(database_url)
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def uow(engine: Engine) -> SqlUnitOfWork:
    return SqlUnitOfWork(engine)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that uses `database_url` (directly or through engine/uow) runs on both."""
    if "database_url" in metafunc.fixturenames and "backend" not in metafunc.fixturenames:
        metafunc.parametrize("database_url", BACKENDS, indirect=True)
