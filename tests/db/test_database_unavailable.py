"""A database that does not answer is ServiceUnavailableError (503 for the API), from every
entry point of the Database; other database errors are left as they are."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from app.db.engine import Database
from app.errors import ServiceUnavailableError
from tests.integration.live import free_port


def ping(db: Database) -> None:
    db.ping()


def read(db: Database) -> None:
    with db.read() as session:
        session.execute(text("SELECT 1"))


def write(db: Database) -> None:
    with db.write() as session:
        session.execute(text("SELECT 1"))


ENTRY_POINTS = [
    pytest.param(ping, id="ping"),
    pytest.param(read, id="read"),
    pytest.param(write, id="write"),
]


@pytest.mark.parametrize("use", ENTRY_POINTS)
def test_postgresql_that_refuses_connections(use: Callable[[Database], None]) -> None:
    db = Database(f"postgresql+psycopg://mintca@127.0.0.1:{free_port()}/mintca", pool_size=1)
    try:
        with pytest.raises(ServiceUnavailableError) as raised:
            use(db)
    finally:
        db.dispose()
    assert "127.0.0.1" not in raised.value.detail, "driver text must not reach the answer"


@pytest.mark.parametrize("use", ENTRY_POINTS)
def test_sqlite_file_that_cannot_be_opened(use: Callable[[Database], None], tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'missing-dir' / 'mintca.db'}", pool_size=1)
    try:
        with pytest.raises(ServiceUnavailableError):
            use(db)
    finally:
        db.dispose()


def test_other_database_errors_are_not_turned_into_503(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'errors.db'}", pool_size=1)
    try:
        with db.write() as session:
            session.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
            session.execute(text("INSERT INTO t VALUES (1)"))
        with pytest.raises(IntegrityError), db.write() as session:
            session.execute(text("INSERT INTO t VALUES (1)"))
    finally:
        db.dispose()
