"""Publishing CRLs: a full and a delta CRL per CA, numbered under the CA row's lock."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property

from sqlalchemy.orm import Session

from app.ca.crl import crl_extensions
from app.ca.crl_der import (
    REASON_BY_NAME,
    certificate_list_parts,
    tbs_cert_list_parts,
)
from app.ca.issuance import Endpoints
from app.ca.signer import sign_parts
from app.clock import Clock
from app.db import crls as crl_queries
from app.db.cas import lock_ca, locked_crl_number, next_crl_number
from app.db.crls import FullCRLRow
from app.db.engine import Database
from app.errors import NotFoundError, ServiceUnavailableError
from app.services.crl_entries import CRLEntries
from app.services.keyring import Authority, Keyring

__all__ = ["REASON_BY_NAME", "CRLService", "PublishedCRL"]

log = logging.getLogger(__name__)
# Superseded full CRLs kept as possible delta bases: at most one per validity/BASE_SLOTS.
BASE_SLOTS = 24
# A full CRL read while a publication replaces its parts is read again (PostgreSQL's READ
# COMMITTED shows each statement the latest commit); each publication takes milliseconds.
READ_ATTEMPTS = 5


@dataclass(frozen=True)
class PublishedCRL:
    ca_id: str
    number: int
    delta_base: int | None
    this_update: datetime
    next_update: datetime
    pieces: tuple[bytes, ...]  # the DER, in pieces (a full CRL's parts are not joined)

    @cached_property
    def der(self) -> bytes:
        return self.pieces[0] if len(self.pieces) == 1 else b"".join(self.pieces)

    @property
    def size(self) -> int:
        return sum(map(len, self.pieces))


def bases_to_drop(rows: list[FullCRLRow], *, now: datetime, slot: timedelta) -> list[int]:
    """Ids of superseded full CRLs no delta will name as its base: those past nextUpdate,
    and all but the oldest of those issued in one `slot` of time. A delta's base is the
    oldest full CRL kept and still current (see `CRLService.publish`); keeping one per
    slot bounds the table at about validity/slot rows per CA, and moves the base at most one
    slot later than keeping every row would."""
    seen: set[int] = set()
    drop = []
    for row in rows:
        bucket = int(row.this_update.timestamp() // slot.total_seconds())
        if row.next_update <= now or bucket in seen:
            drop.append(row.id)
        seen.add(bucket)
    return drop


class CRLService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        keyring: Keyring,
        endpoints: Endpoints,
        validity: timedelta,
    ) -> None:
        self._db = db
        self._clock = clock
        self._keyring = keyring
        self._endpoints = endpoints
        self.validity = validity
        self._entries = CRLEntries(validity)

    def reserve_number(self, session: Session, ca_id: str) -> int:
        """Lock the CA row and take the number the next full CRL will carry. Call first in a
        write transaction that changes a status, then `publish` in the same transaction."""
        return locked_crl_number(session, ca_id) + 1

    def publish(self, session: Session, ca_id: str, *, now: datetime) -> PublishedCRL:
        """Build, sign and store a full CRL and its delta in the caller's transaction, and
        drop the CRLs nothing needs any more. The CA row's lock orders the numbers across
        processes; the unique (ca_id, number, is_delta) constraint backs it. Plain statements,
        no ORM object: a batch of revocations runs this under the lock every other writer of
        the CA waits for."""
        authority = self._keyring.get(ca_id)
        session.flush()  # the caller's ORM rows first (a CA just made, statuses it changed)
        # RFC 5280 §5.2.3: one sequence for full and delta CRLs, and a full and a delta CRL
        # issued together carry the same number (OpenSSL applies a delta only to a full CRL
        # with a smaller number, so the pair never double-counts).
        number = next_crl_number(session, ca_id)
        next_update = now + self.validity

        # RFC 5280 §3.3: an entry stays until a regularly scheduled CRL issued after notAfter
        # has listed it; republication comes within half a validity, so keep one validity.
        cutoff = now - self.validity
        # Every full CRL of the CA before this one: the latest is where the entries start,
        # the older ones are the delta's possible bases.
        superseded = crl_queries.full_crls(session, ca_id)
        latest = superseded[-1] if superseded else None
        entries = self._entries.current(session, ca_id, latest=latest, number=number, cutoff=cutoff)
        part_ids = self._entries.store(session, ca_id, entries)
        full = self._sign(authority, number, now, next_update, entries.runs(), None)
        # Stored without its entries, which are the parts just stored (crl_queries.whole_der).
        head, foot = full[0] + full[1], full[-2] + full[-1]

        # The delta's base is the oldest full CRL still current (this one at the latest).
        base = min((r.number for r in superseded if r.next_update > now), default=number)
        delta = entries.delta_entries(session, ca_id, base, now)
        delta_der = b"".join(self._sign(authority, number, now, next_update, [delta], base))
        row = {"ca_id": ca_id, "number": number, "this_update": now, "next_update": next_update}
        crl_queries.add_crls(
            session,
            [
                {
                    **row,
                    "is_delta": False,
                    "delta_base": None,
                    "der": head + foot,
                    "parts": ",".join(map(str, part_ids)),
                    "entries_at": len(head),
                    "size": sum(map(len, full)),
                },
                {
                    **row,
                    "is_delta": True,
                    "delta_base": base,
                    "der": delta_der,
                    "parts": None,
                    "entries_at": None,
                    "size": None,
                },
            ],
        )
        # Keep the latest full and delta CRL (served) and the superseded full CRLs a later
        # delta may name as its base (as rows without DER); delete the rest.
        slot = self.validity / BASE_SLOTS
        dropped = bases_to_drop(superseded, now=now, slot=slot)
        crl_queries.delete_superseded(session, ca_id, number, dropped)
        crl_queries.clear_superseded_der(session, ca_id, number)
        return PublishedCRL(ca_id, number, None, now, next_update, tuple(full))

    def _sign(
        self,
        authority: Authority,
        number: int,
        this_update: datetime,
        next_update: datetime,
        runs: list[bytes],
        delta_base: int | None,
    ) -> list[bytes]:
        """The signed CRL around the runs of joined entries, in pieces: [CertificateList
        header, TBSCertList up to the entries, *runs, the rest of the TBSCertList, signature
        algorithm and value]. The TBSCertList is hashed piece by piece, never joined."""
        signer = authority.signer
        algorithm = signer.signature_algorithm_oid
        tbs = tbs_cert_list_parts(
            issuer=authority.certificate.subject,
            signature_algorithm_oid=algorithm,
            this_update=this_update,
            next_update=next_update,
            revoked=runs,
            extensions=crl_extensions(
                issuer=authority.certificate,
                number=number,
                delta_base=delta_base,
                delta_url=self._endpoints.delta_crl(authority.ca_id),
            ),
        )
        return certificate_list_parts(tbs, algorithm, sign_parts(signer, tbs))

    def latest(self, ca_id: str, *, delta: bool = False) -> PublishedCRL:
        """Raises:
        NotFoundError: no such CA, or it has published nothing yet."""
        authority = self._keyring.get(ca_id)
        for _attempt in range(READ_ATTEMPTS):
            with self._db.read() as session:
                row = crl_queries.latest(session, authority.ca_id, delta=delta)
                if row is None:
                    raise NotFoundError(f"CA {ca_id} has not published a CRL yet")
                pieces = crl_queries.whole_der(session, row)
            if pieces is not None:
                return PublishedCRL(
                    row.ca_id,
                    row.number,
                    row.delta_base,
                    row.this_update,
                    row.next_update,
                    tuple(pieces),
                )
        raise ServiceUnavailableError(f"the CRL of CA {ca_id} changed while it was read")

    def publish_now(self, ca_id: str) -> PublishedCRL:
        with self._db.write() as session:
            lock_ca(session, ca_id)  # read the clock under the lock, as revocations do
            return self.publish(session, ca_id, now=self._clock.now())

    def republish_due(self) -> list[PublishedCRL]:
        """Republish every CA's CRLs once half their validity has passed. Safe with several
        processes: the check is repeated under the CA row's lock."""
        published = []
        for authority in self._keyring.all():
            # An offline root's CRL is signed only with the operator's key (`mintca ca
            # root-crl`); a CA past its notAfter has no unexpired certificate left (leaves
            # never outlive their issuer), so its last CRL stays served as it is.
            if authority.offline or authority.certificate.not_valid_after_utc < self._clock.now():
                continue
            with self._db.write() as session:
                lock_ca(session, authority.ca_id)
                now = self._clock.now()  # under the lock, so thisUpdate follows the number
                next_update = crl_queries.latest_next_update(session, authority.ca_id)
                if next_update is not None and next_update - now > self.validity / 2:
                    continue
                published.append(self.publish(session, authority.ca_id, now=now))
                log.info("republished CRL %s of CA %s", published[-1].number, authority.ca_id)
        return published
