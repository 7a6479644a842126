"""Issued certificates: signing a leaf, storing its row, and reading its status."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import event
from sqlalchemy.orm import Session

from app.ca.issuance import Endpoints, leaf_window
from app.ca.keys import PublicKey
from app.ca.leaf_der import encode_leaf_tbs, leaf_template, sign_leaf_tbs
from app.ca.names import RequestedNames, check_name_limits
from app.ca.profiles import Profile
from app.ca.serials import format_serial, new_serial_number, parse_serial
from app.clock import Clock
from app.db import certificates as certificate_queries
from app.db.engine import Database
from app.db.models import CertificateRecord
from app.errors import NotFoundError
from app.services import audit
from app.services.keyring import Authority

CertificateStatus = Literal["good", "revoked", "expired"]
_QUEUED = "mintca.queued_certificates"


@dataclass(frozen=True)
class CertificateInfo:
    serial: str
    ca_id: str
    profile: str
    common_name: str | None
    names: list[str]
    not_before: datetime
    not_after: datetime
    created_at: datetime
    revoked_at: datetime | None
    revocation_reason: str | None  # RFC 5280 name, e.g. "keyCompromise"
    invalidity_date: datetime | None
    der: bytes

    def status(self, now: datetime) -> CertificateStatus:
        """`revoked` (a hold included), else `expired`, else `good`."""
        if self.revoked_at is not None:
            return "revoked"
        # RFC 5280 §4.1.2.5: the validity period includes notAfter itself.
        return "expired" if self.not_after < now else "good"


def info_from_record(record: CertificateRecord) -> CertificateInfo:
    return CertificateInfo(
        serial=record.serial,
        ca_id=record.ca_id,
        profile=record.profile,
        common_name=record.common_name,
        names=list(record.names),
        not_before=record.not_before,
        not_after=record.not_after,
        created_at=record.created_at,
        revoked_at=record.revoked_at,
        revocation_reason=record.revocation_reason,
        invalidity_date=record.invalidity_date,
        der=record.der,
    )


def sign_leaf(
    authority: Authority,
    *,
    public_key: PublicKey,
    names: RequestedNames,
    profile: Profile,
    validity: timedelta,
    now: datetime,
    endpoints: Endpoints,
) -> x509.Certificate:
    """Raises:
    MalformedCSRError: names over the limits (checked here too, so that no caller signs a
        certificate that cannot be encoded or stored)."""
    check_name_limits(names)
    signer = authority.signer
    template = leaf_template(authority.issuer, profile, endpoints, signer.signature_algorithm_oid)
    tbs = encode_leaf_tbs(
        template,
        public_key=public_key,
        names=names,
        window=leaf_window(now, validity, authority.certificate),
        serial_number=new_serial_number(),
    )
    return sign_leaf_tbs(template, tbs, signer)


def store_certificate(
    session: Session,
    certificate: x509.Certificate,
    *,
    ca_id: str,
    profile: str,
    names: RequestedNames,
    token_id: str | None,
    now: datetime,
    actor: str,
    action: str = "certificate.issue",
    details: dict[str, Any] | None = None,
) -> CertificateRecord:
    """Add the certificate's row and its audit row (`certificate.issue`, or `action` with
    extra `details`, e.g. a renewal's old serial) to the caller's transaction: an issuance is
    never stored without its audit record."""
    all_names = names.all()
    record = CertificateRecord(
        serial=format_serial(certificate.serial_number),
        ca_id=ca_id,
        profile=profile,
        common_name=names.common_name,
        names=all_names,
        names_text=" ".join(all_names).lower(),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        der=certificate.public_bytes(Encoding.DER),
        token_id=token_id,
        created_at=now,
    )
    session.add(record)
    audit.record(
        session,
        at=now,
        actor=actor,
        action=action,
        target=record.serial,
        details={"profile": profile, "names": all_names, "ca_id": ca_id, **(details or {})},
    )
    return record


def queue_certificate(
    session: Session,
    certificate: x509.Certificate,
    *,
    ca_id: str,
    profile: str,
    names: RequestedNames,
    token_id: str | None,
    now: datetime,
    actor: str,
) -> None:
    """`store_certificate` for a transaction shared by many issuances (group commit): the row
    is kept and inserted with the transaction's other queued rows in one executemany when it
    commits, so a batch costs one INSERT statement instead of one ORM object per row. The row
    is not visible to queries in the same transaction before the commit."""
    all_names = names.all()
    serial = format_serial(certificate.serial_number)
    rows: list[dict[str, Any]] | None = session.info.get(_QUEUED)
    if rows is None:
        rows = session.info[_QUEUED] = []
    rows.append(
        {
            "serial": serial,
            "ca_id": ca_id,
            "profile": profile,
            "common_name": names.common_name,
            "names": all_names,
            "names_text": " ".join(all_names).lower(),
            "not_before": certificate.not_valid_before_utc,
            "not_after": certificate.not_valid_after_utc,
            "der": certificate.public_bytes(Encoding.DER),
            "token_id": token_id,
            "created_at": now,
        }
    )
    audit.record(
        session,
        at=now,
        actor=actor,
        action="certificate.issue",
        target=serial,
        details={"profile": profile, "names": all_names, "ca_id": ca_id},
    )


# Inserted first among the commit's hooks (insert=True): the rows go in before the audit
# chain takes its lock, as store_certificate's flush does.
@event.listens_for(Session, "before_commit", insert=True)
def _insert_queued(session: Session) -> None:
    rows = session.info.pop(_QUEUED, None)
    if rows:
        certificate_queries.insert_certificates(session, rows)


@event.listens_for(Session, "after_soft_rollback")
def _drop_queued(session: Session, _previous_transaction: object) -> None:
    session.info.pop(_QUEUED, None)


class CertificateService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def get(self, serial: str) -> CertificateInfo:
        """Raises:
        InvalidSerialError: not a serial number.
        NotFoundError: MintCA never issued it."""
        key = format_serial(parse_serial(serial))
        with self._db.read() as session:
            record = certificate_queries.find_certificate(session, key)
        if record is None:
            raise NotFoundError(f"no certificate with serial {key}")
        return info_from_record(record)

    def search(
        self,
        *,
        status: str | None = None,
        q: str | None = None,
        profile: str | None = None,
        ca_id: str | None = None,
        expiring_within: timedelta | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> tuple[list[CertificateInfo], str | None]:
        """A page of certificates and the cursor of the next page (None on the last)."""
        now = self._clock.now()
        with self._db.read() as session:
            records = certificate_queries.search(
                session,
                now=now,
                status=status,
                q=q,
                profile=profile,
                ca_id=ca_id,
                expiring_before=now + expiring_within if expiring_within is not None else None,
                after_serial=cursor,
                limit=limit + 1,
            )
        items = [info_from_record(r) for r in records[:limit]]
        return items, items[-1].serial if len(records) > limit else None
