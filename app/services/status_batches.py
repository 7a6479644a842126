"""Status changes in batches (group commit): revocations and unholds that arrive together share
one transaction, and one CRL publication per CA. Each caller's future resolves only once its
change has committed together with the CRL that shows it, so "visible in OCSP at once, and in
the next CRL, published at once" holds for every one of them.

One writer thread per process (started on first use), as for enrollments
(app.services.group_commit): it takes everything queued and commits it while later changes
queue; under load a batch collects what arrived while the previous one committed, alone a
revocation commits at once. Callers wait on a future, from a thread (`submit`) or from the
event loop (`enqueue`, wrapped by the caller), so no thread is held per waiting request.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app.clock import Clock
from app.db import certificates as certificate_queries
from app.db.certificates import STATUS_COLUMNS, StatusRow
from app.db.engine import Database
from app.errors import MintCAError, NotFoundError, ServiceUnavailableError
from app.services.audit import record
from app.services.certificates import CertificateInfo
from app.services.crls import CRLService

log = logging.getLogger(__name__)

# Applies one change to a locked certificate's row at `now`; returns the audit details, or
# raises a domain error (before changing anything) when the change is refused.
StatusChange = Callable[[StatusRow, datetime], dict[str, Any]]
# Called after a commit with the serials whose status changed, by CA id (the OCSP cache's
# invalidation signal belongs here).
StatusListener = Callable[[dict[str, list[str]]], None]
MAX_BATCH = 500


@dataclass
class _Request:
    serial: str
    action: str
    actor: str
    apply: StatusChange
    result: CertificateInfo | None = None
    error: BaseException | None = None
    future: Future[CertificateInfo] = field(default_factory=Future)


class StatusBatches:
    def __init__(self, db: Database, clock: Clock, crls: CRLService) -> None:
        self._db = db
        self._clock = clock
        self._crls = crls
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        # Taken from the queue but left for the next batch (the writer thread's alone).
        self._carry: list[_Request] = []
        self.listeners: list[StatusListener] = []

    def submit(
        self, serial: str, *, action: str, actor: str, apply: StatusChange
    ) -> CertificateInfo:
        """Apply a change to the certificate `serial` (normalised hex) and publish its CA's
        CRLs, in a batch; returns once committed.

        Raises:
            NotFoundError: MintCA never issued this serial.
            MintCAError: whatever `apply` refuses with.
            ServiceUnavailableError: the writer is closed, or the database does not answer.
        """
        return self.enqueue(serial, action=action, actor=actor, apply=apply).result()

    def enqueue(
        self, serial: str, *, action: str, actor: str, apply: StatusChange
    ) -> Future[CertificateInfo]:
        """The same as `submit`, without waiting: the future resolves (with the certificate or
        `submit`'s errors) once the batch holding the change has committed or failed.

        Raises:
            ServiceUnavailableError: the writer is closed."""
        request = _Request(serial, action, actor, apply)
        with self._lock:
            if self._closed:
                raise ServiceUnavailableError("the server is shutting down")
            if self._thread is None:
                # Started on first use, so a process that never revokes (or forks later) has none.
                self._thread = threading.Thread(
                    target=self._write, name="mintca-status-batches", daemon=True
                )
                self._thread.start()
            self._queue.put(request)
        return request.future

    def close(self) -> None:
        """Finish what is queued, then stop the writer."""
        with self._lock:
            self._closed = True
            thread = self._thread
            self._queue.put(None)
        if thread is not None:
            thread.join(timeout=30)

    def notify(self, changed: dict[str, list[str]]) -> None:
        """Tell the listeners which statuses changed (after the commit, never before)."""
        for listener in self.listeners:
            try:
                listener(changed)
            except Exception:  # a listener's failure must not turn a committed change into a 500
                log.exception("status listener failed")

    def _write(self) -> None:
        while True:
            batch, self._carry = self._carry, []
            if not batch:
                first = self._queue.get()
                if first is None:
                    return
                if first.future.set_running_or_notify_cancel():
                    batch = [first]
            self._take(batch)
            if not batch:
                continue
            try:
                self._run(batch)
            except BaseException as exc:  # the writer must outlive any batch, or callers hang
                log.exception("a status batch failed")
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(exc)

    def _take(self, batch: list[_Request]) -> None:
        """Add what is queued to `batch`, up to MAX_BATCH (the stop sentinel stays queued)."""
        while len(batch) < MAX_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is None:
                self._queue.put(None)  # stop after this batch
                return
            # A caller that gave up before its change was taken (a cancelled request) is
            # dropped: nothing of it was done. Once taken, its future can no longer be
            # cancelled, so the batch always settles it.
            if item.future.set_running_or_notify_cancel():
                batch.append(item)

    def _join_late(
        self, session: Session, batch: list[_Request], ca_of: dict[str, str], locked: set[str]
    ) -> None:
        """Add to `batch` what queued while this batch waited for its locks (on SQLite the
        other workers' commits, on PostgreSQL the CA rows'): changes of CAs it holds join,
        the rest waits for the next batch (locking more CA rows now could deadlock)."""
        late: list[_Request] = []
        self._take(late)
        if not late:
            return
        found = certificate_queries.ca_ids_of(session, [r.serial for r in late])
        for request in late:
            ca_id = found.get(request.serial)
            if ca_id is not None and ca_id not in locked:
                self._carry.append(request)
                continue
            if ca_id is None:
                request.error = NotFoundError(f"no certificate with serial {request.serial}")
            else:
                ca_of[request.serial] = ca_id
            batch.append(request)

    def _run(self, batch: list[_Request]) -> None:
        try:
            changed = self._commit(batch)
        except Exception as exc:  # handed to every caller of the batch: nothing committed
            if not isinstance(exc, ServiceUnavailableError):
                log.exception("status batch of %d changes failed", len(batch))
            for request in batch:
                request.future.set_exception(request.error or exc)
            return
        self.notify(changed)
        for request in batch:
            if request.error is not None:
                request.future.set_exception(request.error)
            else:
                assert request.result is not None
                request.future.set_result(request.result)

    def _commit(self, batch: list[_Request]) -> dict[str, list[str]]:
        """One transaction: lock the CA rows (sorted, so writers never deadlock) then the
        certificates, apply the changes, write them in one statement, publish each CA's CRLs
        once, one audit row per change (chained in batch order at the commit)."""
        with self._db.write() as session:
            ca_of = certificate_queries.ca_ids_of(session, [r.serial for r in batch])
            for request in batch:
                if request.serial not in ca_of:
                    request.error = NotFoundError(f"no certificate with serial {request.serial}")
            numbers = {
                ca_id: self._crls.reserve_number(session, ca_id)
                for ca_id in sorted(set(ca_of.values()))
            }
            self._join_late(session, batch, ca_of, set(numbers))
            # The clock under the locks: a greater CRL number must never carry an earlier
            # thisUpdate than the CRL of the writer this one waited for.
            now = self._clock.now()
            rows = certificate_queries.lock_status_rows(session, list(ca_of))
            applied: dict[str, list[tuple[_Request, StatusRow, dict[str, Any]]]] = {}
            for request in batch:
                row = rows.get(request.serial)
                if row is None:
                    continue
                before = _status_of(row)
                try:
                    details = request.apply(row, now)
                except MintCAError as exc:
                    _restore(row, before)  # refused: whatever it changed stays unwritten
                    request.error = exc
                    continue
                row.status_crl_number = numbers[row.ca_id]
                applied.setdefault(row.ca_id, []).append((request, row, details))
            changed_rows = {row.serial: row for rows_ in applied.values() for _, row, _ in rows_}
            certificate_queries.set_statuses(
                session, [{"serial": s, **_status_of(row)} for s, row in changed_rows.items()]
            )
            for ca_id, changes in applied.items():
                crl = self._crls.publish(session, ca_id, now=now)
                for request, row, details in changes:
                    record(
                        session,
                        at=now,
                        actor=request.actor,
                        action=request.action,
                        target=request.serial,
                        details={**details, "crl_number": crl.number},
                    )
                    request.result = _info(row)
        return {ca_id: [r.serial for r, _, _ in changes] for ca_id, changes in applied.items()}


def _status_of(row: StatusRow) -> dict[str, Any]:
    return {name: getattr(row, name) for name in STATUS_COLUMNS}


def _restore(row: StatusRow, status: dict[str, Any]) -> None:
    for name, value in status.items():
        setattr(row, name, value)


def _info(row: StatusRow) -> CertificateInfo:
    return CertificateInfo(
        serial=row.serial,
        ca_id=row.ca_id,
        profile=row.profile,
        common_name=row.common_name,
        names=list(row.names),
        not_before=row.not_before,
        not_after=row.not_after,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        revocation_reason=row.revocation_reason,
        invalidity_date=row.invalidity_date,
        der=row.der,
    )
