"""The Database: sessions framed as one transaction each, `read()` or `write()`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session

_WRITE = "mintca_write"


class Database:
    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.engine = create_engine(url, pool_size=pool_size, max_overflow=32)
            _configure_sqlite(self.engine)
        else:
            self.engine = create_engine(
                url, pool_size=pool_size, max_overflow=32, pool_pre_ping=True
            )
        self._write_engine = self.engine.execution_options(**{_WRITE: True})

    @contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One transaction that commits when the block ends, or rolls back on error.
        On SQLite it begins IMMEDIATE, so concurrent writers queue instead of failing halfway."""
        with Session(self._write_engine, expire_on_commit=False) as session, session.begin():
            yield session

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


def when_transaction_ends(session: Session, callback: Callable[[bool], None]) -> None:
    """Call `callback(committed)` once, when the session's transaction commits (True) or rolls
    back (False): for in-process state that must follow what the database kept."""
    fired = False

    def fire(committed: bool) -> None:
        nonlocal fired
        if not fired:
            fired = True
            callback(committed)

    event.listen(session, "after_commit", lambda _session: fire(True))
    event.listen(session, "after_rollback", lambda _session: fire(False))


def _configure_sqlite(engine: Engine) -> None:
    """SQLAlchemy's pysqlite recipe: let SQLAlchemy emit BEGIN itself (IMMEDIATE for writes)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # A CA must not lose the row of a certificate it has returned.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get(_WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
