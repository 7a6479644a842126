"""The CAs this process signs with: certificates from the database, keys unwrapped with the KEK."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from sqlalchemy.orm import Session

from app.ca.issuance import Issuer
from app.ca.keys import encode_kek, generate_kek, parse_kek, unwrap_private_key
from app.ca.signer import LocalSigner, Signer
from app.config import Settings
from app.db.cas import list_cas
from app.db.engine import Database
from app.errors import ConfigurationError, NotFoundError, ServiceUnavailableError
from app.files import PRIVATE, write_file

RELOAD_INTERVAL_SECONDS = 10.0


@dataclass(frozen=True)
class Authority:
    ca_id: str
    kind: str  # "root" | "issuing"
    parent_id: str | None
    certificate: x509.Certificate
    signer: Signer
    active: bool

    @property
    def issuer(self) -> Issuer:
        return Issuer(self.ca_id, self.certificate)


def load_kek(settings: Settings, *, create: bool = False) -> bytes:
    """The KEK from MINTCA_KEK, else from the KEK file (made with mode 0600 when `create`).

    Raises:
        ConfigurationError: no KEK, or one that is not base64 of 32 bytes.
    """
    path = settings.effective_kek_file
    if not settings.kek and not path.exists():
        if not create:
            raise ConfigurationError(f"no KEK: set MINTCA_KEK or provide {path}")
        _create_kek_file(path)
    try:
        return parse_kek(settings.kek or path.read_text())
    except ValueError as exc:
        raise ConfigurationError(f"MINTCA_KEK / {path}: {exc}") from exc


def _create_kek_file(path: Path) -> None:
    """Durable before any key is wrapped with it (written, fsynced, linked into place, the
    directory fsynced); never over an existing KEK: a replica that won the race keeps its
    file and this process reads that one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(path, (encode_kek(generate_kek()) + "\n").encode(), PRIVATE, replace=False)


class Keyring:
    """Loads every CA once per process; reloads when it meets a CA it does not know yet
    (another process rotated)."""

    def __init__(self, db: Database, kek: bytes) -> None:
        self._db = db
        self._kek = kek
        self._lock = threading.Lock()
        self._authorities: dict[str, Authority] = {}
        self._loaded_at = float("-inf")

    def load(self) -> None:
        with self._db.read() as session:
            self.load_from(session)

    def load_from(self, session: Session) -> None:
        authorities = {}
        for record in list_cas(session):
            try:
                key = unwrap_private_key(record.key_wrapped, kek=self._kek, label=record.id)
            except ValueError as exc:
                raise ConfigurationError(f"{exc}; is MINTCA_KEK the one used at init?") from exc
            authorities[record.id] = Authority(
                ca_id=record.id,
                kind=record.kind,
                parent_id=record.parent_id,
                certificate=x509.load_der_x509_certificate(record.cert_der),
                signer=LocalSigner(key),
                active=record.active,
            )
        with self._lock:
            self._authorities = authorities
            self._loaded_at = time.monotonic()

    def add(self, authority: Authority) -> None:
        """Register a CA created in a transaction that has not committed yet (init, rotate)."""
        with self._lock:
            self._authorities = {**self._authorities, authority.ca_id: authority}

    @property
    def kek(self) -> bytes:
        return self._kek

    def all(self) -> list[Authority]:
        return list(self._authorities.values())

    def find(self, ca_id: str) -> Authority | None:
        """The CA with this id; an unknown id reloads from the database (another process may
        have rotated), at most once every RELOAD_INTERVAL_SECONDS so random ids cannot make
        every request unwrap every key."""
        authority = self._authorities.get(ca_id)
        if authority is None and time.monotonic() - self._loaded_at >= RELOAD_INTERVAL_SECONDS:
            self.load()
            authority = self._authorities.get(ca_id)
        return authority

    def get(self, ca_id: str) -> Authority:
        """Raises:
        NotFoundError: MintCA runs no CA with this id."""
        authority = self.find(ca_id)
        if authority is None:
            raise NotFoundError(f"no CA with id {ca_id[:80]!r}")
        return authority

    def active_issuer(self) -> Authority:
        """Raises:
        ServiceUnavailableError: no issuing CA is loaded (run `mintca init`)."""
        for authority in self._authorities.values():
            if authority.active:
                return authority
        raise ServiceUnavailableError("no issuing CA is loaded; run `mintca init`")

    def chain(self, authority: Authority) -> list[x509.Certificate]:
        """The CA's certificate followed by its parents up to the root."""
        chain = [authority.certificate]
        current = authority
        while current.parent_id is not None:
            current = self.get(current.parent_id)
            chain.append(current.certificate)
        return chain

    def root(self) -> Authority:
        for authority in self._authorities.values():
            if authority.kind == "root":
                return authority
        raise ServiceUnavailableError("no root CA is loaded; run `mintca init`")
