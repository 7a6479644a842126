"""ACME certificates after issuance: download (RFC 8555 §7.4.2), revokeCert (§7.6) and
renewal information (RFC 9773). They are ordinary MintCA certificates: revocation goes
through the revocation service, so OCSP and the CRL show it at once."""

from __future__ import annotations

from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from app.ca.acme.identifiers import REVOCATION_REASONS
from app.ca.acme.jws import b64url_decode, load_jwk, malformed
from app.ca.acme.renewal_info import parse_cert_id, suggested_window
from app.ca.serials import format_serial
from app.clock import Clock
from app.db import acme as queries
from app.db.engine import Database
from app.errors import AcmeProblemError, ConflictError, NotFoundError
from app.services.acme.orders import not_found, signer_of
from app.services.acme.requests import VerifiedRequest
from app.services.certificates import CertificateService
from app.services.keyring import Keyring
from app.services.revocation import RevocationService


class AcmeCertificates:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        keyring: Keyring,
        certificates: CertificateService,
        revocation: RevocationService,
    ) -> None:
        self._db = db
        self._clock = clock
        self._keyring = keyring
        self._certificates = certificates
        self._revocation = revocation

    def certificate_chain(self, request: VerifiedRequest, serial: str) -> list[x509.Certificate]:
        """The leaf of an order of this account, then its issuing CA and the root."""
        account = signer_of(request)
        with self._db.read() as session:
            order = queries.find_order_by_serial(session, serial)
            if order is None or order.account_id != account.id:
                raise not_found("certificate")
        info = self._certificates.get(serial)
        leaf = x509.load_der_x509_certificate(info.der)
        return [leaf, *self._keyring.chain(self._keyring.get(info.ca_id))]

    def revoke(self, request: VerifiedRequest) -> None:
        """RFC 8555 §7.6: by the account that ordered it or with the certificate's own key.

        Raises:
            AcmeProblemError: unauthorized, badRevocationReason, alreadyRevoked, malformed.
        """
        payload = request.payload()
        der = b64url_decode(payload.get("certificate"), what="certificate")
        try:
            certificate = x509.load_der_x509_certificate(der)
        except ValueError as exc:
            raise malformed("certificate is not a DER certificate") from exc
        code = payload.get("reason", 0)
        valid_code = isinstance(code, int) and not isinstance(code, bool)
        reason = REVOCATION_REASONS.get(code) if valid_code else None
        if reason is None:
            raise AcmeProblemError("badRevocationReason", f"reasons: {REVOCATION_REASONS}")
        serial = format_serial(certificate.serial_number)
        info = self._certificates.get(serial)
        if info.der != der:
            raise AcmeProblemError(
                "unauthorized", "MintCA did not issue this certificate", status=403
            )
        actor = self._revoker(request, certificate, serial)
        try:
            self._revocation.revoke(serial, reason=reason, invalidity_date=None, actor=actor)
        except ConflictError as exc:
            raise AcmeProblemError("alreadyRevoked", exc.detail) from exc

    def _revoker(self, request: VerifiedRequest, certificate: x509.Certificate, serial: str) -> str:
        if request.account is not None:
            with self._db.read() as session:
                order = queries.find_order_by_serial(session, serial)
            if order is None or order.account_id != request.account.id:
                raise AcmeProblemError(
                    "unauthorized", "this account did not order the certificate", status=403
                )
            return request.account.url
        spki = certificate.public_key().public_bytes(
            Encoding.DER, PublicFormat.SubjectPublicKeyInfo
        )
        signer = load_jwk(request.jwk).public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        if signer != spki:
            raise AcmeProblemError(
                "unauthorized", "signed by neither the account nor the key", status=403
            )
        return f"acme:certificate-key:{serial}"

    def renewal_window(self, cert_id: str) -> tuple[datetime, datetime]:
        """RFC 9773 §4.2: when the certificate named by `cert_id` should be renewed.

        Raises:
            AcmeProblemError: malformed (a bad identifier), or malformed 404 (unknown).
        """
        parsed = parse_cert_id(cert_id)
        try:
            info = self._certificates.get(format_serial(parsed.serial_number))
        except NotFoundError as exc:
            raise not_found("certificate") from exc
        if info.ca_id != parsed.key_identifier.hex():  # ca_id is the CA's key identifier
            raise not_found("certificate")
        return suggested_window(
            info.not_before,
            info.not_after,
            revoked=info.revoked_at is not None,
            now=self._clock.now(),
        )
