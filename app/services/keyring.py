"""The CAs this process signs with: certificates from the database, keys unwrapped with the KEK."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.ca.issuance import Issuer
from app.ca.keys import (
    PrivateKey,
    encode_kek,
    generate_kek,
    kek_id,
    load_der_private_key,
    parse_kek,
    unwrap_private_key,
    unwrap_secret,
    wrapped_kek_id,
)
from app.ca.signer import LocalSigner, OfflineSigner, Signer
from app.config import Settings
from app.db.cas import active_issuer_id, ca_states, list_cas, wrapped_ca_keys
from app.db.engine import Database
from app.db.models import CARecord
from app.errors import ConfigurationError, NotFoundError, ServiceUnavailableError
from app.files import PRIVATE, write_file

if TYPE_CHECKING:
    from app.services.hsm import Token

RELOAD_INTERVAL_SECONDS = 10.0
KEK_RELOAD_INTERVAL_SECONDS = 1.0
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Authority:
    ca_id: str
    kind: str  # "root" | "issuing"
    parent_id: str | None
    certificate: x509.Certificate
    signer: Signer
    active: bool
    offline: bool = False  # the key is not in the database (an offline root)
    in_token: bool = False  # the key lives in the PKCS#11 token (cas.key_ref)

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
    except (ValueError, OSError) as exc:
        raise ConfigurationError(f"MINTCA_KEK / {path}: {exc}") from exc


def previous_kek_file(settings: Settings) -> Path:
    """Where `mintca kek rotate` keeps the KEKs being retired, one per line."""
    path = settings.effective_kek_file
    return path.with_name(path.name + ".previous")


def load_keks(settings: Settings) -> tuple[bytes, ...]:
    """The current KEK first, then those being retired (MINTCA_KEK_PREVIOUS and the
    `.previous` file beside the KEK file, one per line): keys wrapped under any of them
    unwrap.

    Raises:
        ConfigurationError: no current KEK, or a KEK that is not base64 of 32 bytes.
    """
    current = load_kek(settings)
    path = previous_kek_file(settings)
    try:
        text = (settings.kek_previous or "").replace(",", " ")
        text += " " + (path.read_text() if path.exists() else "")
        previous = [parse_kek(word) for word in text.split()]
    except (ValueError, OSError) as exc:
        raise ConfigurationError(f"MINTCA_KEK_PREVIOUS / {path}: {exc}") from exc
    return tuple(dict.fromkeys([current, *previous]))


def check_keys(settings: Settings) -> None:
    """Unwrap every CA key once, so `serve` stops with one clear line on a wrong or missing
    KEK before it migrates or starts any worker. Reads two columns that every schema
    revision has; a database without the table yet is left to the migration.

    Raises:
        ConfigurationError: no KEK, a malformed one, or one that does not unwrap the keys.
    """
    keks = load_keks(settings)
    db = Database(settings.effective_database_url, pool_size=1)
    try:
        with db.read() as session:
            keys = wrapped_ca_keys(session)
    except DBAPIError:
        log.debug("no CA table to check the KEK against yet", exc_info=True)
        return
    finally:
        db.dispose()
    for ca_id, blob in keys:
        if blob is None:  # an offline root, or a key in a PKCS#11 token
            continue
        try:
            unwrap_private_key(blob, kek=keks, label=ca_id)
        except ValueError as exc:
            raise ConfigurationError(f"{exc}; is MINTCA_KEK the one used at init?") from exc


def _create_kek_file(path: Path) -> None:
    """Durable before any key is wrapped with it (written, fsynced, linked into place, the
    directory fsynced); never over an existing KEK: a replica that won the race keeps its
    file and this process reads that one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(path, (encode_kek(generate_kek()) + "\n").encode(), PRIVATE, replace=False)


class Keyring:
    """Loads every CA once per process; reloads when it meets a CA it does not know yet
    (another process rotated). A reload unwraps only keys it has not unwrapped before."""

    def __init__(
        self,
        db: Database,
        kek: bytes | Sequence[bytes],
        token: Token | None = None,
        *,
        reload_keks: Callable[[], tuple[bytes, ...]] | None = None,
    ) -> None:
        self._db = db
        self._keks = (kek,) if isinstance(kek, bytes) else tuple(kek)
        self._reload_keks = reload_keks
        self._keks_loaded_at = time.monotonic()
        self._token = token
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
        if record.key_ref is not None:
            signer = self._token_signer(record.key_ref, certificate)
        elif record.key_wrapped is None:
            signer = OfflineSigner(certificate.public_key())  # type: ignore[arg-type]  # CA keys are of the accepted types
        else:
            try:
                key = self.unwrap(record.key_wrapped, label=record.id)
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
            offline=record.key_wrapped is None and record.key_ref is None,
            in_token=record.key_ref is not None,
        )

    def _token_signer(self, ref: str, certificate: x509.Certificate) -> Signer:
        """Raises:
        ConfigurationError: the CA's key is in a token this process has not opened."""
        if self._token is None:
            raise ConfigurationError(
                f"a CA key is in a PKCS#11 token ({ref}): set MINTCA_PKCS11_MODULE, "
                "MINTCA_PKCS11_TOKEN_LABEL and MINTCA_PKCS11_PIN_FILE"
            )
        return self._token.signer(ref, certificate.public_key())  # type: ignore[arg-type]  # CA keys are of the accepted types

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
        """The current KEK (the first of those this process holds)."""
        return self._keks[0]

    def unwrap(self, blob: bytes, *, label: str) -> PrivateKey:
        """A private key wrapped under any KEK this process holds or can read (see
        `unwrap_secret`).

        Raises ValueError: no KEK held unwraps it."""
        return load_der_private_key(self.unwrap_secret(blob, label=label), label=label)

    def unwrap_secret(self, blob: bytes, *, label: str) -> bytes:
        """Unwrap with the KEK the blob names. A KEK this process does not hold yet (another
        process ran `mintca kek rotate`) makes it read its KEK sources again, once a second
        at most, so serving processes follow a rotation without a restart.

        Raises ValueError: no KEK held unwraps it."""
        try:
            return unwrap_secret(blob, kek=self._keks, label=label)
        except ValueError:
            if not self._refresh_keks(wrapped_kek_id(blob)):
                raise
            return unwrap_secret(blob, kek=self._keks, label=label)

    def kek_for(self, blob: bytes | None) -> bytes:
        """The KEK to wrap a new key with: the one `blob` (a CA row read under its lock) is
        wrapped under, so new keys follow the database through a KEK rotation even in a
        process that started before it.

        Raises:
            ServiceUnavailableError: this process cannot get that KEK."""
        wanted = wrapped_kek_id(blob) if blob is not None else None
        if wanted is None:  # no wrapped key to follow (offline root, key in a token)
            return self.kek
        for _attempt in range(2):
            for kek in self._keks:
                if kek_id(kek) == wanted:
                    return kek
            # The id comes from the database, not from a client: wait out the reload
            # interval rather than fail (a process younger than it, or one that reloaded
            # just before the rotation's commit, would otherwise refuse for up to a second).
            if not self._refresh_keks(wanted, wait=True):
                break
        raise ServiceUnavailableError(
            f"the keys are wrapped under KEK {wanted}, which this process does not have"
        )

    def _refresh_keks(self, wanted: str | None, *, wait: bool = False) -> bool:
        """Read the KEK sources again when `wanted` is a KEK id we lack; True if it changed.
        At most once per KEK_RELOAD_INTERVAL_SECONDS: sooner, it returns False, or with `wait`
        sleeps until the interval has passed."""
        if self._reload_keks is None or wanted in {kek_id(k) for k in self._keks}:
            return False
        early = KEK_RELOAD_INTERVAL_SECONDS - (time.monotonic() - self._keks_loaded_at)
        if early > 0:
            if not wait:
                return False
            time.sleep(early)
        try:
            keks = self._reload_keks()
        except ConfigurationError:
            log.warning("cannot read the KEK sources again", exc_info=True)
            return False
        finally:
            self._keks_loaded_at = time.monotonic()
        changed = keks != self._keks
        if changed:
            log.info("KEKs reloaded: now %s", ", ".join(kek_id(k) for k in keks))
        self._keks = keks
        return changed

    @property
    def token(self) -> Token | None:
        """The PKCS#11 token new CA keys are made in; None: keys are wrapped with the KEK."""
        return self._token

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
