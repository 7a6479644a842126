"""The full CRL's entries, DER-encoded once and kept between publications, per CA.

A publication runs under the CA row's lock. It brings the kept entries up to date with what
the database says changed since they were last brought up to date (`status_crl_number` above
the kept mark, by any process) and drops the certificates that expired past the cut-off, so
republishing a CRL of a million entries after one revocation encodes one entry, not a million.

The kept state follows the database, never a transaction that did not commit: a publication
checks the state out, and it comes back only when its transaction commits (a rollback drops
it, and the next publication rebuilds it from the database).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from app.ca.crl_der import REASON_BY_NAME, encode_revoked_entry
from app.db import certificates as certificate_queries
from app.db.engine import when_transaction_ends

log = logging.getLogger(__name__)

# How long a publication waits for another thread of this process that holds the same CA's
# entries (it holds the CA row's lock, so the wait is that publication's own length).
CHECKOUT_TIMEOUT_SECONDS = 120.0


def encode_entry(
    serial: str, revoked_at: datetime, reason: str | None, invalidity_date: datetime | None
) -> bytes:
    """The full-CRL entry of a revoked certificate, stored with its status (crl_entry)."""
    return encode_revoked_entry(
        int(serial, 16), revoked_at, REASON_BY_NAME.get(reason or "unspecified"), invalidity_date
    )


@dataclass
class _Entries:
    as_of: int  # every status change with status_crl_number <= as_of is in `ders`
    cutoff: datetime  # certificates with notAfter <= cutoff have been dropped
    ders: dict[str, bytes]  # serial -> entry DER, in a stable order
    # Every status change with status_crl_number > changes_floor: serial -> (that number,
    # entry DER or None once released); the delta CRL's source. None until a delta asks.
    changes_floor: int | None = None
    changes: dict[str, tuple[int, bytes | None]] = field(default_factory=dict)

    def changed_since(
        self, session: Session, ca_id: str, base: int
    ) -> list[tuple[str, bytes | None]]:
        """(serial, entry or None once released) of every status change after the full CRL
        `base` (a delta CRL's entries), from the kept changes when they reach back that far."""
        if self.changes_floor is None or base < self.changes_floor:
            self.changes = {
                serial: (number, entry)
                for serial, entry, _not_after, number in (
                    certificate_queries.status_changes_since(session, ca_id, base)
                )
            }
        elif base > self.changes_floor:
            self.changes = {s: c for s, c in self.changes.items() if c[0] > base}
        self.changes_floor = base
        return [(serial, entry) for serial, (_number, entry) in self.changes.items()]


class CRLEntries:
    """Kept entries of every CA this process publishes for."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._kept: dict[str, _Entries] = {}
        self._out: set[str] = set()

    def current(self, session: Session, ca_id: str, *, number: int, cutoff: datetime) -> _Entries:
        """The entries of the full CRL `number` (`.ders.values()`: certificates with notAfter
        after `cutoff`) and of its delta (`.changed_since(...)`), read in the caller's
        transaction, which holds the CA row's lock and has flushed its own status changes
        (they carry status_crl_number = `number`)."""
        entries = self._checkout(ca_id)
        if entries is None or cutoff < entries.cutoff:
            entries = self._load(session, ca_id, number=number, cutoff=cutoff)
        else:
            self._catch_up(session, ca_id, entries, number=number, cutoff=cutoff)
        kept = entries
        when_transaction_ends(session, lambda committed: self._checkin(ca_id, kept, committed))
        return kept

    def _checkout(self, ca_id: str) -> _Entries | None:
        with self._cond:
            if not self._cond.wait_for(lambda: ca_id not in self._out, CHECKOUT_TIMEOUT_SECONDS):
                log.warning("CRL entries of CA %s still checked out; rebuilding", ca_id)
            self._out.add(ca_id)
            return self._kept.pop(ca_id, None)

    def _checkin(self, ca_id: str, entries: _Entries, committed: bool) -> None:
        with self._cond:
            self._out.discard(ca_id)
            if committed:
                self._kept[ca_id] = entries
            self._cond.notify_all()

    @staticmethod
    def _load(session: Session, ca_id: str, *, number: int, cutoff: datetime) -> _Entries:
        ders = dict(certificate_queries.stream_crl_entries(session, ca_id, cutoff))
        return _Entries(as_of=number, cutoff=cutoff, ders=ders)

    @staticmethod
    def _catch_up(
        session: Session, ca_id: str, entries: _Entries, *, number: int, cutoff: datetime
    ) -> None:
        ders = entries.ders
        changes = certificate_queries.status_changes_since(session, ca_id, entries.as_of)
        for serial, entry, not_after, changed_in in changes:
            if entry is not None and not_after > cutoff:
                ders[serial] = entry
            else:
                ders.pop(serial, None)
            if entries.changes_floor is not None:
                entries.changes[serial] = (changed_in, entry)
        if cutoff > entries.cutoff:
            expired = certificate_queries.revoked_expiring_between(
                session, ca_id, entries.cutoff, cutoff
            )
            for serial in expired:
                ders.pop(serial, None)
        entries.as_of = number
        entries.cutoff = cutoff
