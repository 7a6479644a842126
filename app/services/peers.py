"""Who is on the other end of the mtls listener: the presented certificate, checked against
the database (so a resumed TLS session loses access once revoked).

An accepted certificate is remembered per process with the status generation read before the
database was asked (app.services.status_signal): while no status changed anywhere it is
accepted again without a query; any revocation, hold or unhold that commits on this host
changes the generation before its 200, so the next request of a revoked peer asks the
database again and is refused (other hosts sharing PostgreSQL: once NOTIFY arrives, within
1 s). Expiry is checked on every request."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import IntEnum

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from app.ca.profiles import ROLE_PROFILES
from app.ca.serials import format_serial
from app.clock import Clock
from app.db import certificates as certificate_queries
from app.db.engine import Database
from app.errors import PeerRejectedError, PermissionDeniedError
from app.services.status_signal import StatusSignal

# Accepted certificates remembered per process; more distinct peers than this empty it.
CACHE_MAX = 4096


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


@dataclass(frozen=True)
class _Accepted:
    peer: Peer
    not_before: datetime
    not_after: datetime
    generation: int  # the status generation read before the database said yes


class PeerService:
    def __init__(self, db: Database, clock: Clock, *, signal: StatusSignal | None = None) -> None:
        self._db = db
        self._clock = clock
        self._signal = signal
        self._accepted: dict[str, _Accepted] = {}

    def cached(self, pem: str) -> Peer | None:
        """The peer presenting `pem` (as the TLS layer gave it) if it was accepted since the
        last status change anywhere and is still within its validity; None: authenticate."""
        known = self._usable(pem)
        if known is None or self._signal is None or known.generation != self._signal.value():
            return None
        return known.peer

    def authenticate_pem(self, pem: str | None) -> Peer:
        """`authenticate` for the PEM the TLS layer gave, answered from `cached` when it can;
        after a status change elsewhere, a peer accepted before is checked again with its
        revocation state alone (its DER was compared when it was accepted).

        Raises:
            PeerRejectedError: as `authenticate`, or a certificate that cannot be read."""
        if pem is None:
            raise PeerRejectedError("a client certificate is required")
        generation = self._signal.value() if self._signal is not None else 0  # before the DB
        known = self._usable(pem)
        if known is not None:
            if known.generation == generation or self._still_good(known.peer):
                self._remember(pem, replace(known, generation=generation))
                return known.peer
            self._accepted.pop(pem, None)
        try:
            certificate = x509.load_pem_x509_certificate(pem.encode())
        except ValueError as exc:
            raise PeerRejectedError("the client certificate cannot be read") from exc
        peer = self.authenticate(certificate)
        self._remember(
            pem,
            _Accepted(
                peer, certificate.not_valid_before_utc, certificate.not_valid_after_utc, generation
            ),
        )
        return peer

    def _usable(self, pem: str) -> _Accepted | None:
        known = self._accepted.get(pem)
        if known is None or self._signal is None or not self._signal.shared:
            return None
        if not known.not_before <= self._clock.now() <= known.not_after:
            return None
        return known

    def _still_good(self, peer: Peer) -> bool:
        with self._db.read() as session:
            states = certificate_queries.revocation_states(session, peer.ca_id, [peer.serial])
        state = states.get(peer.serial)
        return state is not None and state[0] is None

    def _remember(self, pem: str, accepted: _Accepted) -> None:
        # Without the shared generation, another worker's revocation would go unseen here.
        if self._signal is None or not self._signal.shared:
            return
        if len(self._accepted) >= CACHE_MAX and pem not in self._accepted:
            self._accepted.clear()
        self._accepted[pem] = accepted

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
