"""The full CRL's entries: DER-encoded once, kept between publications, stored in parts.

A CA's latest full CRL keeps its entries in `crl_parts` rows: runs of joined entry DER of at
most about PART_BYTES each (new entries in smaller tail parts that merge as they fill), never
changed once written, listed in order by the CRL row. A publication runs under the CA row's
lock. It takes the parts of the latest full CRL (those this process keeps, reading only the
ones it lacks: written by another process), applies what changed since that CRL
(`status_crl_number` above its number, by any process) and what expired, and stores only the
parts that changed. After one revocation that is the tail part with one entry more: a million-
entry CRL (50 MB) is hashed again, but not copied or stored.

The kept state follows the database, never a transaction that did not commit: a publication
checks the state out, and it comes back only when its transaction commits (a rollback drops
it, and the next publication reads the parts again).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509
from sqlalchemy.orm import Session

from app.ca.crl_der import (
    REASON_BY_NAME,
    encode_revoked_entry,
    entry_spans,
    header,
    serial_key,
    serial_keys,
)
from app.db import certificates as certificate_queries
from app.db import crls as crl_queries
from app.db.crls import FullCRLRow
from app.db.engine import when_transaction_ends

log = logging.getLogger(__name__)

# How long a publication waits for another thread of this process that holds the same CA's
# entries (it holds the CA row's lock, so the wait is that publication's own length).
CHECKOUT_TIMEOUT_SECONDS = 120.0
# A part is closed at this size: a publication rewrites at most one part per change (a few
# milliseconds of I/O), and a million entries make ~200 parts.
PART_BYTES = 256 * 1024
# New entries go to a tail part closed at PART_BYTES // TAIL_SHARE; closed tail parts of
# about the same size merge (as a binary counter carries) up to PART_BYTES. A publication
# then rewrites a few KiB, not a part of up to PART_BYTES (which every other process
# publishing for the CA also read again), each entry is rewritten about log2(TAIL_SHARE)
# times, and the parts below PART_BYTES stay about that few.
TAIL_SHARE = 16
# Entries cut out one by one (each a search through the parts: ~20 ms at a million) before
# one pass over every entry costs less.
MAX_CUTS = 16


def encode_entry(
    serial: str, revoked_at: datetime, reason: str | None, invalidity_date: datetime | None
) -> bytes:
    """The full-CRL entry of a revoked certificate, stored with its status (crl_entry)."""
    return encode_revoked_entry(
        int(serial, 16), revoked_at, REASON_BY_NAME.get(reason or "unspecified"), invalidity_date
    )


@dataclass
class _Part:
    id: int | None  # its crl_parts row; None once changed, until stored again
    der: bytes


def _without(der: bytes, spans: list[tuple[int, int]]) -> bytes:
    """`der` with the byte ranges `spans` (in order, not overlapping) left out."""
    pieces, at = [], 0
    for start, end in spans:
        pieces.append(der[at:start])
        at = end
    pieces.append(der[at:])
    return b"".join(pieces)


class _Changes:
    """Status changes after some full CRL: for each serial the CRL number that first showed
    its latest change, and its entry DER (revoked) or nothing (released). The revoked ones'
    entries are kept apart, so a delta's entries join in one C call, not a Python loop over
    every change (that loop was a tenth of a revocation's CPU at 10,000 changes)."""

    def __init__(self) -> None:
        self.numbers: dict[str, int] = {}
        self.revoked: dict[str, bytes] = {}
        self.released: dict[str, None] = {}

    def note(self, serial: str, number: int, entry: bytes | None) -> None:
        self.numbers[serial] = number
        if entry is None:
            self.revoked.pop(serial, None)
            self.released[serial] = None
        else:
            self.released.pop(serial, None)
            self.revoked[serial] = entry

    def after(self, base: int) -> _Changes:
        """Those made after the CRL `base`."""
        kept = _Changes()
        for serial, number in self.numbers.items():
            if number > base:
                kept.note(serial, number, self.revoked.get(serial))
        return kept

    def delta_entries(self, now: datetime) -> bytes:
        """The entries of a delta CRL issued at `now`, joined: RFC 5280 §5.3.1 lists a
        released hold with reason removeFromCRL."""
        removed = b"".join(
            encode_revoked_entry(int(serial, 16), now, x509.ReasonFlags.remove_from_crl)
            for serial in self.released
        )
        return b"".join(self.revoked.values()) + removed


@dataclass
class _Entries:
    as_of: int  # the full CRL whose entries `parts` hold: every change up to that number
    cutoff: datetime  # certificates with notAfter <= cutoff have been dropped
    parts: list[_Part]
    # Serial keys (crl_der.serial_key) of every entry in `parts`; may hold a few more
    # (entries another process removed from a part read again): never fewer. A dict of bytes
    # to None, not a set: the garbage collector does not track it (a set of a million keys
    # cost 0.15 s in every full collection).
    listed: dict[bytes, None]
    # Every status change with status_crl_number > changes_floor: the delta CRL's source.
    # None until a delta asks.
    changes_floor: int | None = None
    changes: _Changes = field(default_factory=_Changes)
    # When `changes` was carried over from entries of an earlier full CRL (another process
    # published since): the number it is complete up to; the catch-up reads from there.
    changes_as_of: int | None = None

    def runs(self) -> list[bytes]:
        """The entries as runs of DER to join, for revokedCertificates (in no order: RFC
        5280 §5.1.2.6 gives them none)."""
        return [part.der for part in self.parts if part.der]

    def delta_entries(self, session: Session, ca_id: str, base: int, now: datetime) -> bytes:
        """The joined entries of a delta CRL on the full CRL `base` issued at `now`: every
        status change after `base`, from the kept changes when they reach back that far."""
        if self.changes_floor is None or base < self.changes_floor:
            self.changes = _Changes()
            for serial, entry, _not_after, number in certificate_queries.status_changes_since(
                session, ca_id, base
            ):
                self.changes.note(serial, number, entry)
        elif base > self.changes_floor:
            self.changes = self.changes.after(base)
        self.changes_floor = base
        return self.changes.delta_entries(now)

    def cut(self, keys: set[bytes]) -> None:
        """Remove the entries of the serial keys `keys` (those not listed are skipped)."""
        keys = {key for key in keys if key in self.listed}
        if len(keys) <= MAX_CUTS:
            for key in keys:
                self._cut_one(key)
        else:
            self._cut_all(keys)
        for key in keys:
            del self.listed[key]

    def _cut_one(self, key: bytes) -> None:
        needle = header(0x02, len(key)) + key  # the entry's serial INTEGER
        for part in self.parts:
            if needle not in part.der:
                continue
            spans = [(s, e) for s, e, found in entry_spans(part.der) if found == key]
            if spans:
                part.der, part.id = _without(part.der, spans), None
                return

    def _cut_all(self, keys: set[bytes]) -> None:
        for part in self.parts:
            spans = [(s, e) for s, e, found in entry_spans(part.der) if found in keys]
            if spans:
                part.der, part.id = _without(part.der, spans), None

    def append(self, key: bytes, entry: bytes) -> None:
        """List a new entry, at the end of the tail part (a new one once that is closed)."""
        tail_bytes = PART_BYTES // TAIL_SHARE
        if not self.parts or len(self.parts[-1].der) >= tail_bytes:
            self._merge_tail(tail_bytes)
            self.parts.append(_Part(None, b""))
        last = self.parts[-1]
        last.der, last.id = last.der + entry, None
        self.listed[key] = None

    def _merge_tail(self, tail_bytes: int) -> None:
        """Merge the last two parts while the last is at least half the one before and
        together they fit in a part (a tail's worth of slack: entries overshoot a tail)."""
        parts = self.parts
        while len(parts) >= 2:
            before, last = parts[-2].der, parts[-1].der
            if len(before) >= 2 * len(last) or len(before) + len(last) > PART_BYTES + tail_bytes:
                return
            parts[-2:] = [_Part(None, before + last)]


class CRLEntries:
    """Kept entries of every CA this process publishes for."""

    def __init__(self, validity: timedelta) -> None:
        self._validity = validity
        self._cond = threading.Condition()
        self._kept: dict[str, _Entries] = {}
        self._out: set[str] = set()

    def current(
        self,
        session: Session,
        ca_id: str,
        *,
        latest: FullCRLRow | None,
        number: int,
        cutoff: datetime,
    ) -> _Entries:
        """The entries of the full CRL `number` (`.runs()`: certificates with notAfter after
        `cutoff`) and of its delta (`.delta_entries(...)`), read in the caller's transaction,
        which holds the CA row's lock and has flushed its own status changes (they carry
        status_crl_number = `number`); `latest` is the CA's latest full CRL row before this
        one, as the caller read it. Call `store` before the CRL row is written."""
        kept = self._checkout(ca_id)
        made: list[_Entries] = []
        when_transaction_ends(
            session, lambda committed: self._checkin(ca_id, made[0] if committed else None)
        )
        entries = self._up_to_date(
            session, ca_id, kept, latest=latest, number=number, cutoff=cutoff
        )
        made.append(entries)
        return entries

    @staticmethod
    def store(session: Session, ca_id: str, entries: _Entries) -> list[int]:
        """Write the parts that changed, delete those no longer used; the part ids in order."""
        entries.parts = [part for part in entries.parts if part.der]
        ids = []
        for part in entries.parts:
            if part.id is None:
                part.id = crl_queries.add_part(session, ca_id, part.der)
            ids.append(part.id)
        crl_queries.delete_parts_except(session, ca_id, ids)
        return ids

    def _checkout(self, ca_id: str) -> _Entries | None:
        with self._cond:
            if not self._cond.wait_for(lambda: ca_id not in self._out, CHECKOUT_TIMEOUT_SECONDS):
                log.warning("CRL entries of CA %s still checked out; reading them again", ca_id)
            self._out.add(ca_id)
            return self._kept.pop(ca_id, None)

    def _checkin(self, ca_id: str, entries: _Entries | None) -> None:
        with self._cond:
            self._out.discard(ca_id)
            if entries is not None:
                self._kept[ca_id] = entries
            self._cond.notify_all()

    def _up_to_date(
        self,
        session: Session,
        ca_id: str,
        kept: _Entries | None,
        *,
        latest: FullCRLRow | None,
        number: int,
        cutoff: datetime,
    ) -> _Entries:
        entries = None
        if latest is not None and latest.part_ids is not None:
            entries = self._adopt(session, kept, latest)
        if entries is None or cutoff < entries.cutoff:
            # No parts yet (a CA's first CRL, or one stored whole before migration 0015), or
            # the clock went back: every entry from the certificates table.
            return self._load(session, ca_id, number=number, cutoff=cutoff)
        self._catch_up(session, ca_id, entries, number=number, cutoff=cutoff)
        return entries

    def _adopt(
        self, session: Session, kept: _Entries | None, layout: FullCRLRow
    ) -> _Entries | None:
        """The entries of the latest full CRL: the kept ones when this process published it,
        else the kept parts it still uses and the others read (and their serials listed).
        None when a part is missing."""
        ids = layout.part_ids or []
        if kept is not None and kept.as_of == layout.number and [p.id for p in kept.parts] == ids:
            return kept
        cached = {p.id: p for p in kept.parts if p.id is not None} if kept is not None else {}
        missing = [i for i in ids if i not in cached]
        fetched = crl_queries.part_ders(session, missing)
        if len(fetched) != len(set(missing)):
            log.warning("CRL parts missing for CRL %s; reading every entry again", layout.number)
            return None
        listed = kept.listed if kept is not None else {}
        for der in fetched.values():
            listed.update(dict.fromkeys(serial_keys(der)))
        parts = [cached[i] if i in cached else _Part(i, fetched[i]) for i in ids]
        # The cutoff that CRL used: its thisUpdate less one validity (see CRLService.publish).
        cutoff = layout.this_update - self._validity
        adopted = _Entries(as_of=layout.number, cutoff=cutoff, parts=parts, listed=listed)
        if kept is not None and kept.changes_floor is not None and kept.as_of < layout.number:
            # Keep the delta's changes too: with several workers publishing in turn, reading
            # every change since the delta's base again each time was most of a publication.
            adopted.changes_floor, adopted.changes = kept.changes_floor, kept.changes
            adopted.changes_as_of = kept.as_of
        return adopted

    @staticmethod
    def _load(session: Session, ca_id: str, *, number: int, cutoff: datetime) -> _Entries:
        """Every entry from the certificates table, in parts of about PART_BYTES (cut by
        count from the first entry's size: entries hardly vary)."""
        parts: list[_Part] = []
        listed: dict[bytes, None] = {}
        for batch in certificate_queries.crl_entry_batches(session, ca_id, cutoff):
            step = max(1, PART_BYTES // len(batch[0]))
            for at in range(0, len(batch), step):
                der = b"".join(batch[at : at + step])
                listed.update(dict.fromkeys(serial_keys(der)))
                parts.append(_Part(None, der))
        return _Entries(as_of=number, cutoff=cutoff, parts=parts, listed=listed)

    @staticmethod
    def _catch_up(
        session: Session, ca_id: str, entries: _Entries, *, number: int, cutoff: datetime
    ) -> None:
        cuts: set[bytes] = set()
        adds: dict[bytes, bytes] = {}
        since = entries.as_of
        if entries.changes_floor is not None and entries.changes_as_of is not None:
            since = min(since, entries.changes_as_of)
        entries.changes_as_of = None
        changes = certificate_queries.status_changes_since(session, ca_id, since)
        for serial, entry, not_after, changed_in in changes:
            if entries.changes_floor is not None:
                entries.changes.note(serial, changed_in, entry)
            if changed_in <= entries.as_of:
                continue  # already in the adopted full CRL's parts
            key = serial_key(serial)
            if key in entries.listed:
                cuts.add(key)  # released, or listed anew (a hold moved to a final reason)
            if entry is not None and not_after > cutoff:
                adds[key] = entry
        if cutoff > entries.cutoff:
            expired = certificate_queries.revoked_expiring_between(
                session, ca_id, entries.cutoff, cutoff
            )
            cuts.update(serial_key(serial) for serial in expired)
        entries.cut(cuts)
        for key, entry in adds.items():
            entries.append(key, entry)
        entries.as_of = number
        entries.cutoff = cutoff
