"""Status changes in batches (group commit): revocations and unholds that arrive together share
one transaction, and one CRL publication per CA. Each caller returns only once its change has
committed together with the CRL that shows it, so "visible in OCSP at once, and in the next CRL,
published at once" holds for every one of them.

No thread of its own: the first caller to find no batch in flight leads — it takes everything
queued and commits it — while later callers queue and wait; when the leader is done, a waiter
whose change was not in that batch leads the next one. Under load a batch collects what arrived
while the previous one committed; alone, a revocation commits at once, as before.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.clock import Clock
from app.db import certificates as certificate_queries
from app.db.engine import Database
from app.db.models import CertificateRecord
from app.errors import MintCAError, NotFoundError
from app.services.audit import record
from app.services.certificates import CertificateInfo, info_from_record
from app.services.crls import CRLService

log = logging.getLogger(__name__)

# Applies one change to a locked certificate at `now`; returns the audit details, or raises a
# domain error (before changing anything) when the change is refused.
StatusChange = Callable[[CertificateRecord, datetime], dict[str, Any]]
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
    done: bool = False


class StatusBatches:
    def __init__(self, db: Database, clock: Clock, crls: CRLService) -> None:
        self._db = db
        self._clock = clock
        self._crls = crls
        self._cond = threading.Condition()
        self._queue: list[_Request] = []
        self._leading = False
        self.listeners: list[StatusListener] = []

    def submit(
        self, serial: str, *, action: str, actor: str, apply: StatusChange
    ) -> CertificateInfo:
        """Apply a change to the certificate `serial` (normalised hex) and publish its CA's
        CRLs, in a batch; returns once committed.

        Raises:
            NotFoundError: MintCA never issued this serial.
            MintCAError: whatever `apply` refuses with.
        """
        request = _Request(serial, action, actor, apply)
        with self._cond:
            self._queue.append(request)
        while True:
            with self._cond:
                while not request.done and self._leading:
                    self._cond.wait()
                if request.done:
                    break
                self._leading = True
                batch = self._queue[:MAX_BATCH]
                del self._queue[:MAX_BATCH]
            try:
                self._run(batch)
            finally:
                with self._cond:
                    self._leading = False
                    self._cond.notify_all()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def notify(self, changed: dict[str, list[str]]) -> None:
        """Tell the listeners which statuses changed (after the commit, never before)."""
        for listener in self.listeners:
            try:
                listener(changed)
            except Exception:  # a listener's failure must not turn a committed change into a 500
                log.exception("status listener failed")

    def _run(self, batch: list[_Request]) -> None:
        try:
            changed = self._commit(batch)
        except BaseException as exc:  # handed to every caller of the batch: nothing committed
            for request in batch:
                request.result = None
                request.error = request.error or exc
                request.done = True
            if not isinstance(exc, Exception):
                raise
            return
        for request in batch:
            request.done = True
        self.notify(changed)

    def _commit(self, batch: list[_Request]) -> dict[str, list[str]]:
        """One transaction: lock the CA rows (sorted, so writers never deadlock) then each
        certificate, apply the changes, publish each CA's CRLs once, one audit row per change."""
        with self._db.write() as session:
            ca_of = certificate_queries.ca_ids_of(session, [r.serial for r in batch])
            for request in batch:
                if request.serial not in ca_of:
                    request.error = NotFoundError(f"no certificate with serial {request.serial}")
            numbers = {
                ca_id: self._crls.reserve_number(session, ca_id)
                for ca_id in sorted(set(ca_of.values()))
            }
            # The clock under the locks: a greater CRL number must never carry an earlier
            # thisUpdate than the CRL of the writer this one waited for.
            now = self._clock.now()
            certificates = certificate_queries.lock_certificates(session, list(ca_of))
            applied: dict[str, list[tuple[_Request, CertificateRecord, dict[str, Any]]]] = {}
            for request in batch:
                certificate = certificates.get(request.serial)
                if certificate is None:
                    continue
                try:
                    details = request.apply(certificate, now)
                except MintCAError as exc:
                    request.error = exc
                    continue
                certificate.status_crl_number = numbers[certificate.ca_id]
                applied.setdefault(certificate.ca_id, []).append((request, certificate, details))
            session.flush()
            for ca_id, changes in applied.items():
                crl = self._crls.publish(session, ca_id, now=now)
                for request, certificate, details in changes:
                    record(
                        session,
                        at=now,
                        actor=request.actor,
                        action=request.action,
                        target=request.serial,
                        details={**details, "crl_number": crl.number},
                    )
                    request.result = info_from_record(certificate)
        return {ca_id: [r.serial for r, _, _ in changes] for ca_id, changes in applied.items()}
