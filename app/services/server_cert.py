"""The mtls listener's own server certificate (`server.pem`, `server-key.pem` in the data dir):
renewed by the running server before it expires. Its key never enters the database; the
files are replaced atomically under a file lock that every process of the data dir shares."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from app.ca.issuance import Endpoints, pem_bundle
from app.ca.keys import generate_private_key, load_private_key_pem, private_key_pem
from app.ca.names import RequestedNames
from app.ca.profiles import PROFILES
from app.ca.serials import format_serial
from app.clock import Clock
from app.db.engine import Database
from app.files import write_file
from app.services.certificates import sign_leaf, store_certificate
from app.services.keyring import Keyring
from app.services.setup import SERVER_VALIDITY

log = logging.getLogger(__name__)

CERT_FILE, KEY_FILE, LOCK_FILE = "server.pem", "server-key.pem", ".server-cert.lock"


@dataclass(frozen=True)
class ServerPair:
    """The server key and chain as one PEM (key first), as read together under the lock."""

    pem: bytes
    certificate: x509.Certificate

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.pem).hexdigest()


def is_due(certificate: x509.Certificate, now: datetime) -> bool:
    """Renew with a third of the lifetime left (about 4 months of a 365-day certificate):
    time for every worker and replica to pick it up, and for an operator to notice if not."""
    not_before, not_after = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    return not_after - now < (not_after - not_before) / 3


def names_of(certificate: x509.Certificate) -> RequestedNames:
    """The CN and DNS/IP SANs of a server certificate, so its successor serves the same names."""
    cns = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = x509.SubjectAlternativeName([])
    return RequestedNames(
        common_name=str(cns[0].value) if cns else None,
        dns=tuple(san.get_values_for_type(x509.DNSName)),
        ips=tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress)),
    )


class ServerCertificateService:
    def __init__(
        self, db: Database, clock: Clock, keyring: Keyring, endpoints: Endpoints, data_dir: Path
    ) -> None:
        self._db = db
        self._clock = clock
        self._keyring = keyring
        self._endpoints = endpoints
        self._dir = data_dir

    def reading(self) -> contextlib.AbstractContextManager[None]:
        """Hold this while loading the files by path (uvicorn at start-up), so a renewal
        in another process never shows a new key with the old certificate."""
        return self._locked(fcntl.LOCK_SH)

    @contextlib.contextmanager
    def _locked(self, operation: int) -> Iterator[None]:
        with open(self._dir / LOCK_FILE, "a") as handle:
            fcntl.flock(handle, operation)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def stamp(self) -> tuple[int, int, int]:
        """What tells a process that server.pem was replaced (inode, size, mtime): a stat,
        cheap enough to ask every second."""
        info = (self._dir / CERT_FILE).stat()
        return info.st_ino, info.st_size, info.st_mtime_ns

    def read(self) -> ServerPair:
        """The key and chain as they are now, read together (never half of a renewal)."""
        with self._locked(fcntl.LOCK_SH):
            key_pem = (self._dir / KEY_FILE).read_bytes()
            chain_pem = (self._dir / CERT_FILE).read_bytes()
        certificate = x509.load_pem_x509_certificate(chain_pem)
        key = load_private_key_pem(key_pem)
        if key.public_key() != certificate.public_key():
            raise ValueError(f"{KEY_FILE} does not belong to {CERT_FILE}")
        return ServerPair(key_pem + chain_pem, certificate)

    def renew_if_due(self) -> x509.Certificate | None:
        """Issue a successor (same names, fresh P-256 key, the active issuing CA) when a third
        of the lifetime is left; one process of the data dir does it, the others find it done.
        Returns the new certificate, or None when nothing was due."""
        with self._locked(fcntl.LOCK_EX):
            current = x509.load_pem_x509_certificate((self._dir / CERT_FILE).read_bytes())
            now = self._clock.now()
            if not is_due(current, now):
                return None
            authority = self._keyring.active_issuer()
            key = generate_private_key("ec-p256")
            names = names_of(current)
            certificate = sign_leaf(
                authority,
                public_key=key.public_key(),
                names=names,
                profile=PROFILES["server"],
                validity=SERVER_VALIDITY,
                now=now,
                endpoints=self._endpoints,
            )
            with self._db.write() as session:
                store_certificate(
                    session,
                    certificate,
                    ca_id=authority.ca_id,
                    profile="server",
                    names=names,
                    token_id=None,
                    now=now,
                    actor="mintca (server certificate renewal)",
                )
            # Key first: a reader holds the shared lock, so it never sees one without the other.
            write_file(self._dir / KEY_FILE, private_key_pem(key), 0o600)
            chain = pem_bundle(certificate, authority.certificate)
            write_file(self._dir / CERT_FILE, chain, 0o644)
        log.info(
            "renewed the server certificate: %s, valid until %s",
            format_serial(certificate.serial_number),
            certificate.not_valid_after_utc,
        )
        return certificate
