"""The Database: sessions framed as one transaction each, `read()` or `write()`. A database
that does not answer becomes ServiceUnavailableError (503), never a driver error."""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from app.errors import ServiceUnavailableError
from app.files import create_private_file

log = logging.getLogger(__name__)
# Set while Database.write begins its SQLite transaction, so that it begins IMMEDIATE.
_beginning_write = threading.local()


class Database:
    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            secure_sqlite_file(url)
            self.engine = create_engine(url, pool_size=pool_size, max_overflow=32)
            _configure_sqlite(self.engine)
        else:
            self.engine = create_engine(
                url, pool_size=pool_size, max_overflow=32, pool_pre_ping=True
            )
        self._write_lock = _SQLiteWriteLock(url) if self.is_sqlite else None

    @contextmanager
    def read(self) -> Iterator[Session]:
        """Raises:
        ServiceUnavailableError: the database does not answer."""
        with (
            _unavailable_as_503(),
            Session(self.engine, expire_on_commit=False) as session,
            session.begin(),
        ):
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One transaction that commits when the block ends, or rolls back on error.
        On SQLite it begins IMMEDIATE, so concurrent writers queue instead of failing halfway,
        and queue on a file lock first: SQLite's own busy handler polls with sleeps of up to
        100 ms, which made the tail latency of writers in several worker processes collapse;
        the kernel hands a file lock to the next waiter at once.

        Raises:
            ServiceUnavailableError: the database does not answer (nothing was committed)."""
        lock = self._write_lock.held() if self._write_lock is not None else nullcontext()
        with (
            _unavailable_as_503(),
            lock,
            Session(self.engine, expire_on_commit=False) as session,
            session.begin(),
        ):
            if self.is_sqlite:
                _beginning_write.active = True
                try:
                    session.connection()  # BEGIN IMMEDIATE now, in this thread
                finally:
                    _beginning_write.active = False
            yield session

    def ping(self) -> None:
        """Raises:
        ServiceUnavailableError: the database does not answer."""
        with _unavailable_as_503(), self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


class _SQLiteWriteLock:
    """An exclusive flock on `<database>.write-lock`, taken around every write transaction of
    this process's Database (threads queue on an in-process lock first; a nested write in the
    same thread does not take it twice). Opened per process: a forked child must not share its
    parent's open file, whose flock would be the same lock."""

    def __init__(self, url: str) -> None:
        database = make_url(url).database
        self._path = (
            None
            if not database or database == ":memory:" or database.startswith("file:")
            else Path(f"{database}.write-lock")
        )
        self._lock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None
        self._pid = 0

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._lock:
            if self._path is None or self._depth > 0:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            fd = self._open(self._path)
            if fd is None:  # no directory for it: SQLite will fail to open it, and say why
                self._path = None
                yield
                return
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._depth = 1
            try:
                yield
            finally:
                self._depth = 0
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _open(self, path: Path) -> int | None:
        if self._fd is None or self._pid != os.getpid():
            if not path.parent.is_dir():
                return None
            create_private_file(path)
            self._fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            self._pid = os.getpid()
        return self._fd


def secure_sqlite_file(url: str) -> None:
    """The database holds wrapped keys and token hashes: create its file with mode 0600 before
    SQLite does (SQLite gives -wal and -shm the main file's mode), and tighten files an
    older MintCA left readable by others."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if not path.parent.is_dir():
        return  # SQLite will fail to open it, and say why
    create_private_file(path)
    for suffix in ("-wal", "-shm"):
        sidecar = path.with_name(path.name + suffix)
        if sidecar.exists() and sidecar.stat().st_mode & 0o077:
            sidecar.chmod(0o600)


@contextmanager
def _unavailable_as_503() -> Iterator[None]:
    """A server that is down, restarting or cut the connection (OperationalError,
    InterfaceError, an invalidated connection) is a 503 the client may retry: logged here
    in one line, without a traceback per request and without driver text in the answer.
    The pool drops the dead connections, so the next request after recovery reconnects."""
    try:
        yield
    except DBAPIError as exc:
        if not (isinstance(exc, OperationalError | InterfaceError) or exc.connection_invalidated):
            raise
        cause = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else repr(exc)
        log.warning("database unavailable: %s", cause)
        raise ServiceUnavailableError("the database is unavailable; try again shortly") from exc


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
    """SQLAlchemy's pysqlite recipe: let SQLAlchemy emit BEGIN itself (IMMEDIATE for writes).
    The BEGIN comes from the dialect's `do_begin`, not from a "begin" event as in the recipe:
    any connection event makes SQLAlchemy run its event dispatch around every statement of
    the engine (a third of a small query's cost, README: Performance)."""

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

    engine.dialect.do_begin = _begin_sqlite  # type: ignore[method-assign]


def _begin_sqlite(dbapi_connection: Any) -> None:
    """Every transaction's BEGIN on this engine: IMMEDIATE for the one `Database.write` is
    beginning in this thread, so it holds SQLite's write lock from its start."""
    immediate = getattr(_beginning_write, "active", False)
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    finally:
        cursor.close()
