"""Revocation and holds: the status change, the CRL that shows it and the audit row commit
together, so a relying party sees it at once in OCSP and in the next CRL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from app.ca.serials import format_serial, parse_serial
from app.clock import Clock
from app.db import certificates as certificate_queries
from app.db.engine import Database
from app.db.models import CertificateRecord
from app.errors import ConflictError, InvalidReasonError, InvalidRequestError, NotFoundError
from app.services.audit import record
from app.services.certificates import CertificateInfo, info_from_record
from app.services.crls import REASON_BY_NAME, CRLService

HOLD = "certificateHold"


def check_reason(reason: str) -> str:
    """Raises:
    InvalidReasonError: not an RFC 5280 reason name, or `removeFromCRL` (a delta CRL
        artefact, never a reason an operator gives)."""
    if reason not in REASON_BY_NAME:
        raise InvalidReasonError(
            f"unknown reason {reason!r}; use one of {', '.join(REASON_BY_NAME)}"
        )
    return reason


class RevocationService:
    def __init__(self, db: Database, clock: Clock, crls: CRLService) -> None:
        self._db = db
        self._clock = clock
        self._crls = crls

    def revoke(
        self,
        serial: str,
        *,
        reason: str,
        invalidity_date: datetime | None,
        actor: str,
    ) -> CertificateInfo:
        """Revoke (or hold) a certificate and publish the CRLs of its CA.

        Raises:
            InvalidSerialError, InvalidReasonError, InvalidRequestError: bad input (an
                invalidity date in the future).
            NotFoundError: MintCA never issued this serial.
            ConflictError: already revoked, unless a hold moves to a final reason.
        """
        check_reason(reason)
        if invalidity_date is not None:
            if invalidity_date > self._clock.now():
                raise InvalidRequestError("invalidity_date must not be in the future")
            invalidity_date = invalidity_date.astimezone(UTC)

        def revoke(certificate: CertificateRecord, now: datetime) -> dict[str, Any]:
            previous = certificate.revocation_reason
            if certificate.revoked_at is not None and not (previous == HOLD and reason != HOLD):
                raise ConflictError(
                    f"certificate {certificate.serial} is already revoked ({previous}); only "
                    "a hold can move to a final reason"
                )
            if previous != HOLD:  # a hold that becomes final keeps the hold's date
                certificate.revoked_at = now
            certificate.revocation_reason = reason
            certificate.invalidity_date = invalidity_date
            return {"reason": reason, "previous": previous}

        return self._change_status(serial, action="certificate.revoke", actor=actor, apply=revoke)

    def unhold(self, serial: str, *, actor: str) -> CertificateInfo:
        """Lift a `certificateHold`.

        Raises:
            InvalidSerialError: bad input.
            NotFoundError: MintCA never issued this serial.
            ConflictError: the certificate is not on hold.
        """

        def release(certificate: CertificateRecord, _now: datetime) -> dict[str, Any]:
            if certificate.revocation_reason != HOLD:
                raise ConflictError(f"certificate {certificate.serial} is not on hold")
            certificate.revoked_at = None
            certificate.revocation_reason = None
            certificate.invalidity_date = None
            return {}

        return self._change_status(serial, action="certificate.unhold", actor=actor, apply=release)

    def _change_status(
        self,
        serial: str,
        *,
        action: str,
        actor: str,
        apply: Callable[[CertificateRecord, datetime], dict[str, Any]],
    ) -> CertificateInfo:
        """One transaction: lock the CA row then the certificate (every writer takes them in
        this order), apply the change, publish the CA's CRLs and write the audit row."""
        key = format_serial(parse_serial(serial))
        with self._db.write() as session:
            found = certificate_queries.find_certificate(session, key)
            if found is None:
                raise NotFoundError(f"no certificate with serial {key}")
            number = self._crls.reserve_number(session, found.ca_id)
            # The clock under the lock: a greater CRL number must never carry an earlier
            # thisUpdate than the CRL of the writer this one waited for.
            now = self._clock.now()
            certificate = certificate_queries.lock_certificate(session, key)
            assert certificate is not None
            details = apply(certificate, now)
            certificate.status_crl_number = number
            session.flush()
            crl = self._crls.publish(session, certificate.ca_id, now=now)
            record(
                session,
                at=now,
                actor=actor,
                action=action,
                target=key,
                details={**details, "crl_number": crl.number},
            )
            return info_from_record(certificate)
