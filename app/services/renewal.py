"""Renewal on the mtls listener: the presented certificate (still valid, not revoked, not on
hold) gets a successor with the same names and profile from the active issuing CA, stored in
one transaction with its `certificate.renew` audit row."""

from __future__ import annotations

from cryptography import x509

from app.ca.csr import check_csr, load_csr
from app.ca.issuance import Endpoints
from app.ca.profiles import check_csr_requests, get_profile, with_caller_identity
from app.ca.renewal import check_csr_names_within, names_of, renewal_validity
from app.ca.serials import format_serial
from app.clock import Clock
from app.db import certificates as certificate_queries
from app.db.engine import Database
from app.db.models import CertificateRecord
from app.errors import PeerRejectedError, ProfileViolationError
from app.services.certificates import sign_leaf, store_certificate
from app.services.enrollment import IssuedCertificate
from app.services.keyring import Keyring


class RenewalService:
    def __init__(self, db: Database, clock: Clock, keyring: Keyring, endpoints: Endpoints) -> None:
        self._db = db
        self._clock = clock
        self._keyring = keyring
        self._endpoints = endpoints

    def renew(self, serial: str, *, csr_data: bytes | str, actor: str) -> IssuedCertificate:
        """Issue the successor of the certificate `serial` (the authenticated peer's) for the
        key of a CSR. The predecessor stays valid until it expires or is revoked.

        Raises:
            PeerRejectedError: the certificate is unknown, revoked, on hold or not valid now.
            MalformedCSRError, CSRSignatureError, UnsupportedKeyError: a bad CSR.
            ProfileViolationError: the CSR asks for more than the profile gives, or the
                profile is not renewable (OCSP responders are MintCA's own).
            NameNotAllowedError: the CSR names a name the certificate does not carry.
        """
        with self._db.read() as session:
            old = self._check_usable(certificate_queries.find_certificate(session, serial))
        predecessor = x509.load_der_x509_certificate(old.der)
        profile = get_profile(old.profile)
        if not profile.enrollable:
            raise ProfileViolationError(f"{profile.name!r} certificates are not renewed here")
        csr = load_csr(csr_data)
        public_key = check_csr(csr)
        check_csr_requests(csr, profile)
        names = names_of(predecessor)
        check_csr_names_within(csr, names)
        # A caller certificate from before caller URIs (CN only) gains its URI SAN, derived
        # from the same CN: strict verifiers accept the successor.
        names = with_caller_identity(names, profile, trust_domain=self._endpoints.trust_domain)

        authority = self._keyring.active_issuer()
        now = self._clock.now()
        certificate = sign_leaf(
            authority,
            public_key=public_key,
            names=names,
            profile=profile,
            validity=renewal_validity(predecessor, profile),
            now=now,
            endpoints=self._endpoints,
        )
        with self._db.write() as session:
            # Again inside the transaction: a revocation that committed since the check wins.
            old = self._check_usable(certificate_queries.find_certificate(session, serial))
            store_certificate(
                session,
                certificate,
                ca_id=authority.ca_id,
                profile=profile.name,
                names=names,
                token_id=old.token_id,  # a bulk revocation by token still finds successors
                now=now,
                actor=actor,
                action="certificate.renew",
                details={"renews": old.serial},
            )
        return IssuedCertificate(
            format_serial(certificate.serial_number),
            certificate,
            self._keyring.chain(authority),
            profile.name,
        )

    def _check_usable(self, record: CertificateRecord | None) -> CertificateRecord:
        if record is None:
            raise PeerRejectedError("the client certificate was not issued by this CA")
        if record.revoked_at is not None:
            raise PeerRejectedError("a revoked or held certificate cannot be renewed")
        if not record.not_before <= self._clock.now() <= record.not_after:
            raise PeerRejectedError("an expired certificate cannot be renewed")
        return record
