"""SQLite engine settings that let the server and the evolver share one file."""

import sqlite3

import pytest
from sqlalchemy import text

from ecosystem.db import begin_write, make_engine, make_sessionmaker, upgrade


def test_sqlite_uses_wal_foreign_keys_and_a_busy_timeout(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'new' / 'ecosystem.db'}")  # the directory is created
    with engine.connect() as connection:
        pragma = {p: connection.exec_driver_sql(f"PRAGMA {p}").scalar() for p in ("journal_mode", "foreign_keys")}
        assert pragma == {"journal_mode": "wal", "foreign_keys": 1}
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
    engine.dispose()


def test_a_reader_is_not_blocked_by_an_open_write(tmp_path):
    url = f"sqlite:///{tmp_path / 'ecosystem.db'}"
    upgrade(url)
    writer, reader = make_engine(url), make_engine(url)
    with writer.begin() as w:
        w.execute(
            text(
                'INSERT INTO tasks (name, scoring, "window", gate_share, created_at) '
                "VALUES ('t', 'accuracy', 10, 0.1, '2026-01-01 00:00:00')"
            )
        )
        with reader.connect() as r:
            assert r.execute(text("SELECT count(*) FROM tasks")).scalar() == 0  # sees the last commit
    with reader.connect() as r:
        assert r.execute(text("SELECT count(*) FROM tasks")).scalar() == 1
    writer.dispose()
    reader.dispose()


def test_begin_write_takes_the_sqlite_write_lock_up_front(tmp_path):
    url = f"sqlite:///{tmp_path / 'ecosystem.db'}"
    upgrade(url)
    engine = make_engine(url)
    with make_sessionmaker(engine)() as session:
        begin_write(session)
        session.execute(text("SELECT count(*) FROM tasks"))
        other = sqlite3.connect(tmp_path / "ecosystem.db", timeout=0.05, isolation_level=None)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")  # the session already holds the write lock
        other.close()
    with make_sessionmaker(engine)() as session:  # the option does not leak into later transactions
        session.execute(text("SELECT 1"))
        assert "sqlite_immediate" not in session.connection().get_execution_options()
    engine.dispose()
