"""Enrollment with a one-time token: decide, sign outside the transaction, then spend the token
and store the certificate together."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from datetime import timedelta

from cryptography import x509
from sqlalchemy.orm import Session

from app.ca.csr import check_csr, load_csr
from app.ca.issuance import Endpoints
from app.ca.names import check_names_allowed, read_requested_names
from app.ca.profiles import (
    Profile,
    check_csr_requests,
    check_names_fit_profile,
    check_trust_domain_names,
    get_profile,
    with_caller_identity,
)
from app.ca.serials import format_serial
from app.clock import Clock
from app.db.engine import Database
from app.errors import ProfileViolationError, TokenRejectedError
from app.services.certificates import queue_certificate, sign_leaf
from app.services.group_commit import GroupCommitter
from app.services.keyring import Authority, Keyring, confirmed_active_issuer
from app.services.token_spends import spend_use
from app.services.tokens import TokenGrant, TokenService


@dataclass(frozen=True)
class IssuedCertificate:
    serial: str
    certificate: x509.Certificate
    chain: list[x509.Certificate]  # the issuing CA, then its parents up to the root
    profile: str


def choose_validity(profile: Profile, grant: TokenGrant, requested_days: int | None) -> timedelta:
    """The requested validity, or the profile's default, within the token's and profile's
    bounds.

    Raises:
        ProfileViolationError: more than the token or profile allows (never clamped silently).
    """
    limit = profile.max_validity
    if grant.max_validity_days is not None:
        limit = min(limit, timedelta(days=grant.max_validity_days))
    if requested_days is None:
        return min(profile.default_validity, limit)
    if requested_days < 1:
        raise ProfileViolationError("validity_days must be at least 1")
    if requested_days > limit.days:  # compare ints: timedelta() overflows on huge requests
        raise ProfileViolationError(
            f"validity_days {requested_days} exceeds the {limit.days} days that the token "
            f"and profile {profile.name!r} allow"
        )
    return timedelta(days=requested_days)


class EnrollmentService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        keyring: Keyring,
        tokens: TokenService,
        endpoints: Endpoints,
        committer: GroupCommitter,
    ) -> None:
        self._db = db
        self._clock = clock
        self._keyring = keyring
        self._tokens = tokens
        self._endpoints = endpoints
        self._committer = committer

    def enroll(
        self,
        *,
        token: str | None,
        csr_data: bytes | str,
        profile: str | None = None,
        validity_days: int | None = None,
    ) -> IssuedCertificate:
        """Issue a certificate for a CSR that a token allows.

        Raises:
            TokenRejectedError: missing, unknown, expired or used-up token.
            MalformedCSRError, CSRSignatureError, UnsupportedKeyError: a bad CSR.
            ProfileViolationError: a profile, validity or extension the token or profile
                does not give.
            NameNotAllowedError: a name outside the token's names.
        """
        grant = self._tokens.authenticate_for_enrollment(token)
        return self.start(
            grant,
            token=token or "",
            csr_data=csr_data,
            profile=profile,
            validity_days=validity_days,
        ).result()

    def start(
        self,
        grant: TokenGrant,
        *,
        token: str,
        csr_data: bytes | str,
        profile: str | None = None,
        validity_days: int | None = None,
    ) -> Future[IssuedCertificate]:
        """`enroll` for an authenticated token's grant, without waiting for the commit: checks
        and signs in the caller's thread (no query, so an event loop may call it), then hands
        the write to the group commit. The future resolves after the commit.

        Raises:
            as `enroll` (the future raises TokenRejectedError when the spend is refused, and
            the commit's errors).
        """
        csr = load_csr(csr_data)
        public_key = check_csr(csr)
        profile_name = profile or grant.profiles[0]
        if profile_name not in grant.profiles:
            raise ProfileViolationError(
                f"the token allows the profiles {', '.join(grant.profiles)}, not {profile_name!r}"
            )
        chosen = get_profile(profile_name)
        check_csr_requests(csr, chosen)
        names = read_requested_names(csr)
        check_names_allowed(names, list(grant.names))
        check_names_fit_profile(names, chosen)
        trust_domain = self._endpoints.trust_domain
        check_trust_domain_names(names, chosen, trust_domain=trust_domain)
        # Derived from the CN the token just allowed: no name the token did not approve.
        names = with_caller_identity(names, chosen, trust_domain=trust_domain)
        validity = choose_validity(chosen, grant, validity_days)

        authority = self._keyring.loaded_active_issuer()
        now = self._clock.now()

        def sign(issuer: Authority) -> x509.Certificate:
            return sign_leaf(
                issuer,
                public_key=public_key,
                names=names,
                profile=chosen,
                validity=validity,
                now=now,
                endpoints=self._endpoints,
            )

        signed = sign(authority)
        actor = f"token:{grant.id}"

        def store(session: Session) -> tuple[Authority, x509.Certificate]:
            # Check, then write: a refusal must come before any write (GroupCommitter.submit).
            # Signed with the CA this process knew; the transaction confirms it is still the
            # active one, so a rotation committed anywhere before is never missed.
            active = confirmed_active_issuer(self._keyring, session)
            certificate = signed if active.ca_id == authority.ca_id else sign(active)
            if not spend_use(session, grant.id, now):
                raise TokenRejectedError("the token is unknown, expired or used up")
            queue_certificate(
                session,
                certificate,
                ca_id=active.ca_id,
                profile=chosen.name,
                names=names,
                token_id=grant.id,
                now=now,
                actor=actor,
            )
            return active, certificate

        # Many enrollments share one commit; the 201 goes out only after it (README).
        committed = self._committer.submit_nowait(store)
        issued: Future[IssuedCertificate] = Future()

        def finish(done: Future[tuple[Authority, x509.Certificate]]) -> None:
            error = done.exception()
            if error is not None:
                if isinstance(error, TokenRejectedError):
                    self._tokens.forget(token)
                issued.set_exception(error)
                return
            try:
                active, certificate = done.result()
                chain = self._keyring.chain(active)
            except Exception as exc:  # resolve the future whatever happens, or a caller hangs
                issued.set_exception(exc)
                return
            serial = format_serial(certificate.serial_number)
            issued.set_result(IssuedCertificate(serial, certificate, chain, chosen.name))

        committed.add_done_callback(finish)
        return issued
