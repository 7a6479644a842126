"""How SQLite transactions begin: a write holds SQLite's write lock from its first moment
(BEGIN IMMEDIATE), so concurrent writers queue instead of failing halfway; a read begins a
transaction of its own (BEGIN), so all its statements see one snapshot, and takes no write lock.
Both come from the dialect, with no connection event on the engine (README: Performance)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from app.db.engine import Database


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'mintca.db'}")
    with database.write() as session:
        session.execute(text("CREATE TABLE things (n INTEGER)"))
        session.execute(text("INSERT INTO things VALUES (1)"))
    yield database
    database.dispose()


def other_writer(db: Database) -> sqlite3.Connection:
    """A connection of another process's kind, that does not wait for locks."""
    database = db.engine.url.database
    assert database is not None
    return sqlite3.connect(database, timeout=0, isolation_level=None)


def test_a_write_holds_the_write_lock_before_its_first_statement(db: Database) -> None:
    other = other_writer(db)
    try:
        with db.write(), pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")  # released with the commit
        other.execute("ROLLBACK")
    finally:
        other.close()


def test_a_read_takes_no_write_lock_and_sees_one_snapshot(db: Database) -> None:
    other = other_writer(db)
    try:
        with db.read() as session:
            assert session.execute(text("SELECT count(*) FROM things")).scalar_one() == 1
            other.execute("BEGIN IMMEDIATE")
            other.execute("INSERT INTO things VALUES (2)")
            other.execute("COMMIT")
            # Still the snapshot the read began with: its statements share a transaction.
            assert session.execute(text("SELECT count(*) FROM things")).scalar_one() == 1
        with db.read() as session:
            assert session.execute(text("SELECT count(*) FROM things")).scalar_one() == 2
    finally:
        other.close()


def test_a_read_inside_a_write_does_not_begin_immediate(db: Database) -> None:
    """Only the write's own BEGIN is IMMEDIATE: a read opened while a write is open (another
    connection) must not queue behind the write lock that write holds."""
    with db.write() as session:
        session.execute(text("INSERT INTO things VALUES (3)"))
        with db.read() as reader:
            assert reader.execute(text("SELECT count(*) FROM things")).scalar_one() == 1


def test_the_engine_has_no_connection_events(db: Database) -> None:
    """Any connection event puts SQLAlchemy's event dispatch around every statement."""
    assert not db.engine._has_events
