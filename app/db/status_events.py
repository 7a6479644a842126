"""Noticing certificate status changes (revoke, hold, unhold) wherever they are written.

Caches of signed statuses (the OCSP fast path) must drop what a committed change makes stale.
Rather than every writer remembering to say so, a Database is watched: any flush or ORM
UPDATE that touches a certificate's revocation columns marks the session; on PostgreSQL the
same transaction sends NOTIFY (delivered to every listener only if it commits,
as PostgreSQL documents NOTIFY); after the commit, the callbacks run, before the writer
returns to its caller.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.pool import Pool

from app.db.engine import Database
from app.db.models import CertificateRecord

if TYPE_CHECKING:  # imported where it listens: a SQLite CA never loads the PostgreSQL driver
    import psycopg

log = logging.getLogger(__name__)

CHANNEL = "mintca_cert_status"
_WATCHED_COLUMNS = ("revoked_at", "revocation_reason")
_FLAG = "mintca_status_changed"
RECONNECT_SECONDS = 0.5

# Callbacks by the connection pool of the Database they watch (its write engine shares it).
_callbacks: dict[Pool, list[Callable[[], None]]] = {}
_callbacks_lock = threading.Lock()


def _origin(pool: Pool) -> str:
    """Names the Database that wrote, so its own listener can skip what it already knows."""
    return f"{os.getpid()}-{id(pool)}"


def on_status_change(db: Database, callback: Callable[[], None]) -> Callable[[], None]:
    """Call `callback` after every commit through `db` that changed a certificate's
    revocation state. Returns a function that unregisters it."""
    pool = db.engine.pool
    with _callbacks_lock:
        _callbacks.setdefault(pool, []).append(callback)

    def remove() -> None:
        with _callbacks_lock:
            registered = _callbacks.get(pool, [])
            if callback in registered:
                registered.remove(callback)
            if not registered:
                _callbacks.pop(pool, None)

    return remove


def mark_status_changed(session: Session) -> None:
    """Say that this transaction changes certificate statuses, for writes the events below
    cannot see (raw SQL text, or a connection used without the Session)."""
    _mark(session)


def _mark(session: Session) -> None:
    if session.info.get(_FLAG):
        return
    session.info[_FLAG] = True
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        # Queued in this transaction: listeners hear it only if it commits.
        session.connection().exec_driver_sql(f"NOTIFY {CHANNEL}, '{_origin(bind.engine.pool)}'")


def _changes_status(instance: object) -> bool:
    if not isinstance(instance, CertificateRecord):
        return False
    attributes = inspect(instance).attrs
    return any(attributes[name].history.has_changes() for name in _WATCHED_COLUMNS)


@event.listens_for(Session, "after_flush")
def _after_flush(session: Session, _context: Any) -> None:
    if any(_changes_status(instance) for instance in session.dirty):
        _mark(session)


@event.listens_for(Session, "do_orm_execute")
def _on_execute(state: ORMExecuteState) -> None:
    # Bulk `update(CertificateRecord)` statements bypass the flush.
    table = getattr(state.statement, "table", None)
    if state.is_update and getattr(table, "name", None) == CertificateRecord.__tablename__:
        _mark(state.session)


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if not session.info.pop(_FLAG, False):
        return
    with _callbacks_lock:
        callbacks = list(_callbacks.get(session.get_bind().engine.pool, []))
    for callback in callbacks:
        callback()


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_FLAG, None)


class StatusListener:
    """LISTENs on PostgreSQL for status changes committed through other Databases (other
    processes and hosts) and calls `callback` for each; after a lost connection it calls it
    once more (a change may have been missed) and reconnects every RECONNECT_SECONDS."""

    def __init__(self, db: Database, callback: Callable[[], None]) -> None:
        url = make_url(db.url).set(drivername="postgresql")
        self._conninfo = url.render_as_string(hide_password=False)
        self._origin = _origin(db.engine.pool)
        self._callback = callback
        self._stop = threading.Event()
        self._connection: psycopg.Connection[Any] | None = None
        self._thread = threading.Thread(target=self._run, name="status-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def _run(self) -> None:
        import psycopg  # loaded already: the Database's PostgreSQL engine uses it

        reconnecting, failing = False, False
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    if reconnecting:
                        self._callback()
                    if failing:
                        log.warning("status listener reconnected to PostgreSQL")
                    reconnecting, failing = True, False
                    while not self._stop.is_set():
                        for notify in conn.notifies(timeout=RECONNECT_SECONDS):
                            if notify.payload != self._origin:
                                self._callback()
            except psycopg.Error as error:
                if not failing:  # once per outage, not every retry
                    log.warning("status listener lost PostgreSQL (%s); retrying", error)
                failing = True
                self._stop.wait(RECONNECT_SECONDS)
