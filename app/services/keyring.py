"""The CAs this process signs with: certificates from the database, keys unwrapped with the KEK."""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from sqlalchemy.orm import Session

from app.ca.issuance import Issuer
from app.ca.keys import encode_kek, generate_kek, parse_kek, unwrap_private_key
from app.ca.signer import LocalSigner, OfflineSigner, Signer
from app.config import Settings
from app.db.cas import active_issuer_id, ca_states, list_cas
from app.db.engine import Database
from app.db.models import CARecord
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
    offline: bool = False  # the key is not in the database (an offline root)

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
    (another process rotated). A reload unwraps only keys it has not unwrapped before."""

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
        known = self._authorities
        authorities = {}
        for record in list_cas(session):
            previous = known.get(record.id)
            if previous is not None:  # the id is the key's SKI: same id, same key
                authorities[record.id] = dataclasses.replace(previous, active=record.active)
            else:
                authorities[record.id] = self._authority(record)
        with self._lock:
            self._authorities = authorities
            self._loaded_at = time.monotonic()

    def _authority(self, record: CARecord) -> Authority:
        certificate = x509.load_der_x509_certificate(record.cert_der)
        signer: Signer
        if record.key_wrapped is None:
            signer = OfflineSigner(certificate.public_key())  # type: ignore[arg-type]  # CA keys are of the accepted types
        else:
            try:
                key = unwrap_private_key(record.key_wrapped, kek=self._kek, label=record.id)
            except ValueError as exc:
                raise ConfigurationError(f"{exc}; is MINTCA_KEK the one used at init?") from exc
            signer = LocalSigner(key)
        return Authority(
            ca_id=record.id,
            kind=record.kind,
            parent_id=record.parent_id,
            certificate=certificate,
            signer=signer,
            active=record.active,
            offline=record.key_wrapped is None,
        )

    def refresh(self) -> bool:
        """Reload when the database's CAs or the active flag differ from what this process
        holds (one small query); True when something changed."""
        with self._db.read() as session:
            states = ca_states(session)
            if states == [(a.ca_id, a.active) for a in self._authorities.values()]:
                return False
            self.load_from(session)
        return True

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

    def active_issuer(self, session: Session | None = None) -> Authority:
        """The issuing CA new certificates come from, as the database says now (in `session`
        when given, so a caller's transaction pays one small query and no new session): a
        rotation committed by any process is used by the next issuance of every process.

        Raises:
            ServiceUnavailableError: no issuing CA (run `mintca init`)."""
        if session is None:
            with self._db.read() as own:
                return self.active_issuer(own)
        ca_id = active_issuer_id(session)
        if ca_id is None:
            raise ServiceUnavailableError("no issuing CA is loaded; run `mintca init`")
        authority = self._authorities.get(ca_id)
        if authority is None or not authority.active:
            self.load_from(session)  # another process rotated
            authority = self._authorities[ca_id]
        return authority

    def loaded_active_issuer(self) -> Authority:
        """The active issuing CA as this process last loaded it (no query): what to sign with
        before a transaction confirms it with `active_issuer(session)`.

        Raises:
            ServiceUnavailableError: none is loaded."""
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


_ACTIVE_IN_SESSION = "mintca.active_issuer"


def confirmed_active_issuer(keyring: Keyring, session: Session) -> Authority:
    """`keyring.active_issuer(session)`, asked once per transaction: the writes that share one
    group commit share one answer (the transaction holds the write lock on SQLite, so it cannot
    change under them).

    Raises:
        ServiceUnavailableError: no issuing CA."""
    authority: Authority | None = session.info.get(_ACTIVE_IN_SESSION)
    if authority is None:
        authority = session.info[_ACTIVE_IN_SESSION] = keyring.active_issuer(session)
    return authority
