"""Who is on the other end of the mtls listener: the presented certificate, checked against
the database on every request (so a resumed TLS session loses access once revoked)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from app.ca.profiles import ROLE_PROFILES
from app.ca.serials import format_serial
from app.clock import Clock
from app.db import certificates as certificate_queries
from app.db.engine import Database
from app.errors import PeerRejectedError, PermissionDeniedError


class Role(IntEnum):
    """Roles on the mtls listener, each including the ones below it (SPEC: roles)."""

    CERTIFICATE = 0  # any valid certificate of MintCA: renewal only
    AUDITOR = 1  # reads: certificates, CAs, audit, docs
    OPERATOR = 2  # also revokes, unholds, bulk-revokes, makes tokens
    ADMIN = 3  # also rotates CAs, makes ACME credentials, issues role certificates


# The profile that carries each role (app.ca.profiles.ROLE_PROFILES names the same three).
ROLE_OF_PROFILE = {"auditor": Role.AUDITOR, "operator": Role.OPERATOR, "admin": Role.ADMIN}


@dataclass(frozen=True)
class Peer:
    serial: str
    subject: str
    profile: str
    ca_id: str

    @property
    def actor(self) -> str:
        """How the audit log names this peer."""
        return f"cert:{self.serial} {self.subject}"

    @property
    def is_admin(self) -> bool:
        return self.profile == "admin"

    @property
    def role(self) -> Role:
        return ROLE_OF_PROFILE.get(self.profile, Role.CERTIFICATE)


class PeerService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def authenticate(self, certificate: x509.Certificate | None) -> Peer:
        """Raises:
        PeerRejectedError: no certificate, or one that is unknown, revoked, on hold or
            expired (the TLS handshake already checked the chain)."""
        if certificate is None:
            raise PeerRejectedError("a client certificate is required")
        serial = format_serial(certificate.serial_number)
        with self._db.read() as session:
            row = certificate_queries.find_certificate(session, serial)
        # Compare the whole DER: the serial alone could be reused by a foreign CA.
        if row is None or row.der != certificate.public_bytes(Encoding.DER):
            raise PeerRejectedError("the client certificate was not issued by this CA")
        if row.revoked_at is not None:
            raise PeerRejectedError("the client certificate is revoked")
        now = self._clock.now()
        if not row.not_before <= now <= row.not_after:  # both ends inclusive (RFC 5280)
            raise PeerRejectedError("the client certificate is expired or not yet valid")
        return Peer(serial, certificate.subject.rfc4514_string(), row.profile, row.ca_id)


def check_may_grant(peer: Peer, profiles: list[str]) -> None:
    """A token for a role profile mints role certificates: only an admin hands those out, so
    an operator cannot make itself an admin.

    Raises:
        PermissionDeniedError: a role profile asked for by a peer below admin."""
    granted = [p for p in profiles if p in ROLE_PROFILES]
    if granted and peer.role < Role.ADMIN:
        raise PermissionDeniedError(
            f"only an admin may make tokens for the role profiles {', '.join(granted)}"
        )
