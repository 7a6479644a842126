"""Publishing CRLs: a full and a delta CRL per CA, numbered under the CA row's lock."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy.orm import Session

from app.ca.crl import RevokedEntry, build_crl
from app.ca.issuance import Endpoints
from app.clock import Clock
from app.db import certificates as certificate_queries
from app.db import crls as crl_queries
from app.db.cas import lock_ca
from app.db.engine import Database
from app.db.models import CertificateRecord, CRLRecord
from app.errors import NotFoundError
from app.services.keyring import Keyring

log = logging.getLogger(__name__)

REASON_BY_NAME: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "keyCompromise": x509.ReasonFlags.key_compromise,
    "cACompromise": x509.ReasonFlags.ca_compromise,
    "affiliationChanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
    "certificateHold": x509.ReasonFlags.certificate_hold,
    "privilegeWithdrawn": x509.ReasonFlags.privilege_withdrawn,
    "aACompromise": x509.ReasonFlags.aa_compromise,
}


@dataclass(frozen=True)
class PublishedCRL:
    ca_id: str
    number: int
    delta_base: int | None
    this_update: datetime
    next_update: datetime
    der: bytes


def _entry(record: CertificateRecord) -> RevokedEntry:
    assert record.revoked_at is not None
    reason = REASON_BY_NAME.get(record.revocation_reason or "unspecified")
    return RevokedEntry(int(record.serial, 16), record.revoked_at, reason, record.invalidity_date)


def _removed_entry(record: CertificateRecord, at: datetime) -> RevokedEntry:
    # RFC 5280 §5.3.1: a delta CRL lists a released hold with reason removeFromCRL.
    return RevokedEntry(int(record.serial, 16), at, x509.ReasonFlags.remove_from_crl)


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

    def reserve_number(self, session: Session, ca_id: str) -> int:
        """Lock the CA row and take the number the next full CRL will carry. Call first in a
        write transaction that changes a status, then `publish` in the same transaction."""
        return lock_ca(session, ca_id).crl_number + 1

    def publish(self, session: Session, ca_id: str, *, now: datetime) -> PublishedCRL:
        """Build, sign and store a full CRL and its delta in the caller's transaction.
        The CA row's lock orders the numbers across processes; the unique (ca_id, number)
        constraint backs it."""
        authority = self._keyring.get(ca_id)
        ca = lock_ca(session, ca_id)
        # RFC 5280 §5.2.3: one sequence for full and delta CRLs, and a full and a delta CRL
        # issued together carry the same number (OpenSSL applies a delta only to a full CRL
        # with a smaller number, so the pair never double-counts).
        number = ca.crl_number = ca.crl_number + 1
        next_update = now + self.validity

        def store(entries: list[RevokedEntry], *, delta_base: int | None = None) -> bytes:
            builder = build_crl(
                issuer=authority.certificate,
                number=number,
                this_update=now,
                next_update=next_update,
                entries=entries,
                delta_base=delta_base,
                delta_url=self._endpoints.delta_crl(ca_id),
            )
            der = authority.signer.sign_crl(builder).public_bytes(Encoding.DER)
            session.add(
                CRLRecord(
                    ca_id=ca_id,
                    number=number,
                    is_delta=delta_base is not None,
                    delta_base=delta_base,
                    this_update=now,
                    next_update=next_update,
                    der=der,
                )
            )
            session.flush()
            return der

        # RFC 5280 §3.3: an entry stays until a regularly scheduled CRL issued after notAfter
        # has listed it; republication comes within half a validity, so keep one validity.
        revoked = certificate_queries.revoked_on(session, ca_id, now - self.validity)
        full_der = store([_entry(r) for r in revoked])
        # The delta's base is the oldest full CRL still current (this one at the latest).
        base = crl_queries.oldest_current_full_number(session, ca_id, now) or number
        changed = certificate_queries.changed_since(session, ca_id, base)
        store(
            [_entry(r) if r.revoked_at is not None else _removed_entry(r, now) for r in changed],
            delta_base=base,
        )
        return PublishedCRL(ca_id, number, None, now, next_update, full_der)

    def latest(self, ca_id: str, *, delta: bool = False) -> PublishedCRL:
        """Raises:
        NotFoundError: no such CA, or it has published nothing yet."""
        authority = self._keyring.get(ca_id)
        with self._db.read() as session:
            row = crl_queries.latest(session, authority.ca_id, delta=delta)
        if row is None:
            raise NotFoundError(f"CA {ca_id} has not published a CRL yet")
        return PublishedCRL(
            row.ca_id, row.number, row.delta_base, row.this_update, row.next_update, row.der
        )

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
                row = crl_queries.latest(session, authority.ca_id, delta=False)
                if row is not None and row.next_update - now > self.validity / 2:
                    continue
                published.append(self.publish(session, authority.ca_id, now=now))
                log.info("republished CRL %s of CA %s", published[-1].number, authority.ca_id)
        return published
