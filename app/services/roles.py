"""Role certificates (admin, operator, auditor) issued by an admin over the mtls listener: the
key and CSR are made on the holder's side, the grant is an audited admin action."""

from __future__ import annotations

from datetime import timedelta

from app.ca.csr import check_csr, load_csr
from app.ca.issuance import Endpoints
from app.ca.names import read_requested_names
from app.ca.profiles import ROLE_PROFILES, check_csr_requests, get_profile, with_caller_identity
from app.ca.serials import format_serial
from app.clock import Clock
from app.db.engine import Database
from app.errors import ProfileViolationError
from app.services import audit
from app.services.certificates import sign_leaf, store_certificate
from app.services.enrollment import IssuedCertificate
from app.services.keyring import Keyring


class RoleService:
    def __init__(self, db: Database, clock: Clock, keyring: Keyring, endpoints: Endpoints) -> None:
        self._db = db
        self._clock = clock
        self._keyring = keyring
        self._endpoints = endpoints

    def issue(
        self, *, csr_data: str, role: str, validity_days: int | None, actor: str
    ) -> IssuedCertificate:
        """Issue a certificate of the profile `role` to the CN of a CSR that names nothing
        else; its URI SAN is spiffe://<trust domain>/<role>/<CN>.

        Raises:
            MalformedCSRError, CSRSignatureError, UnsupportedKeyError: a bad CSR.
            ProfileViolationError: not a role, SANs in the CSR, a CN that cannot name a
                caller, or a validity beyond the profile's.
        """
        if role not in ROLE_PROFILES:
            raise ProfileViolationError(f"role must be one of {', '.join(ROLE_PROFILES)}")
        profile = get_profile(role)
        csr = load_csr(csr_data)
        public_key = check_csr(csr)
        check_csr_requests(csr, profile)
        names = read_requested_names(csr)
        if names.common_name is None or names.all() != [names.common_name]:
            raise ProfileViolationError(
                "a role certificate's CSR names its holder by CN only (no subjectAltName)"
            )
        names = with_caller_identity(names, profile, trust_domain=self._endpoints.trust_domain)
        validity = profile.default_validity
        if validity_days is not None:
            if not 1 <= validity_days <= profile.max_validity.days:
                raise ProfileViolationError(
                    f"validity_days must be 1 to {profile.max_validity.days} for {role!r}"
                )
            validity = timedelta(days=validity_days)

        authority = self._keyring.active_issuer()
        now = self._clock.now()
        certificate = sign_leaf(
            authority,
            public_key=public_key,
            names=names,
            profile=profile,
            validity=validity,
            now=now,
            endpoints=self._endpoints,
        )
        serial = format_serial(certificate.serial_number)
        with self._db.write() as session:
            store_certificate(
                session,
                certificate,
                ca_id=authority.ca_id,
                profile=role,
                names=names,
                token_id=None,
                now=now,
                actor=actor,
            )
            audit.record(
                session,
                at=now,
                actor=actor,
                action="role.grant",
                target=serial,
                details={"role": role, "holder": names.common_name, "names": names.all()},
            )
        return IssuedCertificate(serial, certificate, self._keyring.chain(authority), role)
