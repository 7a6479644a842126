"""Revocation and holds: the status change, the CRL that shows it and the audit row commit
together (several changes arriving together share one commit and one CRL number), so a relying
party sees it at once in OCSP and in the next CRL."""

from __future__ import annotations

from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any

from app.ca.serials import format_serial, parse_serial
from app.clock import Clock
from app.db.certificates import RevocationFilter, StatusRow
from app.db.engine import Database
from app.errors import ConflictError, InvalidReasonError, InvalidRequestError
from app.services.bulk_revocation import BulkRevocation, check_filter, preview, revoke_matching
from app.services.certificates import CertificateInfo
from app.services.crl_entries import encode_entry
from app.services.crls import REASON_BY_NAME, CRLService
from app.services.status_batches import StatusBatches, StatusChange

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
        self.batches = StatusBatches(db, clock, crls)

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
        return self.start_revoke(
            serial, reason=reason, invalidity_date=invalidity_date, actor=actor
        ).result()

    def start_revoke(
        self,
        serial: str,
        *,
        reason: str,
        invalidity_date: datetime | None,
        actor: str,
    ) -> Future[CertificateInfo]:
        """`revoke` without waiting (for the event loop): bad input raises at once, the rest
        of `revoke`'s errors come from the future, which resolves once the revocation and the
        CRLs that list it have committed.

        Raises:
            InvalidSerialError, InvalidReasonError, InvalidRequestError: bad input.
        """
        check_reason(reason)
        if invalidity_date is not None:
            if invalidity_date > self._clock.now():
                raise InvalidRequestError("invalidity_date must not be in the future")
            invalidity_date = invalidity_date.astimezone(UTC)

        def revoke(certificate: StatusRow, now: datetime) -> dict[str, Any]:
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
            assert certificate.revoked_at is not None
            certificate.crl_entry = encode_entry(
                certificate.serial, certificate.revoked_at, reason, invalidity_date
            )
            return {"reason": reason, "previous": previous}

        key = format_serial(parse_serial(serial))
        return self.batches.enqueue(key, action="certificate.revoke", actor=actor, apply=revoke)

    def unhold(self, serial: str, *, actor: str) -> CertificateInfo:
        """Lift a `certificateHold`.

        Raises:
            InvalidSerialError: bad input.
            NotFoundError: MintCA never issued this serial.
            ConflictError: the certificate is not on hold.
        """

        def release(certificate: StatusRow, _now: datetime) -> dict[str, Any]:
            if certificate.revocation_reason != HOLD:
                raise ConflictError(f"certificate {certificate.serial} is not on hold")
            certificate.revoked_at = None
            certificate.revocation_reason = None
            certificate.invalidity_date = None
            certificate.crl_entry = None
            return {}

        return self._change_status(serial, action="certificate.unhold", actor=actor, apply=release)

    def revoke_matching(
        self, criteria: RevocationFilter, *, reason: str, dry_run: bool, actor: str
    ) -> BulkRevocation:
        """Bulk revocation of every certificate `criteria` matches (not expired, not revoked
        yet, or on hold when `reason` is final); a dry run only counts them.

        Raises:
            InvalidReasonError: not an RFC 5280 reason name.
            InvalidRequestError: an empty filter.
        """
        check_reason(reason)
        check_filter(criteria)
        if dry_run:
            return preview(self._db, self._clock, criteria, reason=reason)
        return revoke_matching(
            self._db, self._clock, self._crls, self.batches, criteria, reason=reason, actor=actor
        )

    def close(self) -> None:
        """Commit what is queued, then stop the writer."""
        self.batches.close()

    def _change_status(
        self,
        serial: str,
        *,
        action: str,
        actor: str,
        apply: StatusChange,
    ) -> CertificateInfo:
        """Every status change goes through here: applied with others that arrive together,
        committed with the CRLs of its CA and its audit row (app.services.status_batches)."""
        key = format_serial(parse_serial(serial))
        return self.batches.submit(key, action=action, actor=actor, apply=apply)
