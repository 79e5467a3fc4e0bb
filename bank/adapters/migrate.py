"""Run and check Alembic migrations programmatically (used by `bank db upgrade` and `serve`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

import migrations

SCRIPT_LOCATION = str(Path(migrations.__file__).parent)


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return config


# Key of the PostgreSQL advisory lock that serialises schema changes: servers started together
# on an empty database would otherwise race to create the same tables.
MIGRATION_LOCK_KEY = 0x62616E6B  # "bank"


def _serialised(conn: Connection) -> None:
    """On PostgreSQL, wait for any other process migrating this database (the lock is held
    until this transaction ends); SQLite's single writer already serialises."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to `revision` in one transaction, one process at a time."""
    config = alembic_config(engine)
    with engine.begin() as conn:
        _serialised(conn)
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def downgrade(engine: Engine, revision: str) -> None:
    config = alembic_config(engine)
    with engine.begin() as conn:
        _serialised(conn)
        config.attributes["connection"] = conn
        command.downgrade(config, revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision(engine: Engine) -> str | None:
    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def is_known(engine: Engine, revision: str) -> bool:
    """Whether this code's migration scripts know `revision` (False for a newer schema)."""
    try:
        return ScriptDirectory.from_config(alembic_config(engine)).get_revision(
            revision) is not None
    except Exception:  # alembic raises ResolutionError/CommandError for unknown revisions
        return False
