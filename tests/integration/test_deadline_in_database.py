"""A write with a deadline tells the database how long it may wait: PostgreSQL's statement and
lock timeouts for that transaction only, SQLite's busy timeout for its write lock."""

from __future__ import annotations


def _settings(tx, is_postgres: bool) -> tuple[str, ...]:
    if is_postgres:
        return (tx.conn.exec_driver_sql("SHOW statement_timeout").scalar(),
                tx.conn.exec_driver_sql("SHOW lock_timeout").scalar())
    return (str(tx.conn.exec_driver_sql("PRAGMA busy_timeout").scalar()),)


def test_a_write_with_a_deadline_waits_no_longer_than_it_and_the_next_one_is_not_bound(uow):
    with uow.write(0.25) as tx:
        assert _settings(tx, uow.is_postgres) == (
            ("250ms", "250ms") if uow.is_postgres else ("250",))
    with uow.write() as tx:
        assert _settings(tx, uow.is_postgres) == (("0", "0") if uow.is_postgres else ("30000",))
