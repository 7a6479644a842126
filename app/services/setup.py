"""`mintca init`: schema, KEK, root and issuing CA, the mtls server certificate, the first
admin certificate and first CRLs, in one transaction; then the files of the data dir."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import text
from sqlalchemy.orm import Session

from app.ca.bootstrap import NewCA, create_issuing_ca, create_root
from app.ca.issuance import Endpoints, pem_bundle
from app.ca.keys import generate_private_key, private_key_pem, wrap_private_key
from app.ca.names import RequestedNames, is_ip
from app.ca.profiles import PROFILES, with_caller_identity
from app.ca.serials import format_serial
from app.ca.signer import LocalSigner
from app.clock import Clock
from app.config import Settings
from app.db.cas import any_ca_exists
from app.db.engine import Database
from app.db.migrate import upgrade
from app.db.models import CARecord
from app.services.audit import record
from app.services.certificates import sign_leaf, store_certificate
from app.services.crls import CRLService
from app.services.keyring import Authority, Keyring, load_kek

SERVER_VALIDITY = timedelta(days=365)
ADMIN_VALIDITY = timedelta(days=365)
# Any constant: the advisory lock that lets one of several replicas initialise a shared
# PostgreSQL while the others wait and then find it done.
_PG_INIT_LOCK = 0x4D494E55


@dataclass(frozen=True)
class InitOptions:
    name: str = "MintCA"
    root_key: str = "ec-p384"
    issuing_key: str = "ec-p256"
    server_names: tuple[str, ...] = ("localhost", "127.0.0.1")
    admin_name: str = "admin"


@dataclass
class InitReport:
    created: bool
    root_ca_id: str
    issuing_ca_id: str
    files: list[str] = field(default_factory=list)


def is_initialised(settings: Settings) -> bool:
    return (settings.data_dir / "root.pem").exists()


def initialise(settings: Settings, options: InitOptions, clock: Clock) -> InitReport:
    """Idempotent: on an initialised database it creates no row; it writes only files that
    are missing (a replica joining a shared database gets the CA files and, since server keys
    never enter the database, a server certificate of its own)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.effective_database_url)
    kek = load_kek(settings, create=True)
    db = Database(settings.effective_database_url, pool_size=1)
    try:
        return _initialise(settings, options, clock, db, kek)
    finally:
        db.dispose()


def _initialise(
    settings: Settings, options: InitOptions, clock: Clock, db: Database, kek: bytes
) -> InitReport:
    endpoints = Endpoints(settings.base_url, settings.trust_domain)
    keyring = Keyring(db, kek)
    files: dict[str, tuple[bytes, int]] = {}
    with db.write() as session:
        if not db.is_sqlite:
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_INIT_LOCK})
        created = not any_ca_exists(session)
        if created:
            now = clock.now()
            root = create_root(name=options.name, key_type=options.root_key, now=now)
            issuing = create_issuing_ca(
                name=options.name,
                key_type=options.issuing_key,
                root=root,
                now=now,
                endpoints=endpoints,
            )
            _add_ca(session, root, kind="root", parent=None, kek=kek, now=now)
            _add_ca(session, issuing, kind="issuing", parent=root.ca_id, kek=kek, now=now)
            session.flush()
            for ca, parent in ((root, None), (issuing, root.ca_id)):
                keyring.add(_authority(ca, parent, active=ca is issuing))
            admin = _issue_into_files(
                session,
                keyring.get(issuing.ca_id),
                with_caller_identity(
                    RequestedNames(common_name=options.admin_name),
                    PROFILES["admin"],
                    trust_domain=endpoints.trust_domain,
                ),
                profile="admin",
                validity=ADMIN_VALIDITY,
                now=now,
                endpoints=endpoints,
                files=files,
            )
            crls = CRLService(db, clock, keyring, endpoints, settings.crl_validity)
            for ca in (root, issuing):
                crls.publish(session, ca.ca_id, now=now)
            record(
                session,
                at=now,
                actor="mintca init",
                action="ca.init",
                target=issuing.ca_id,
                details={
                    "root": root.ca_id,
                    "issuing": issuing.ca_id,
                    "admin": format_serial(admin.serial_number),
                },
            )
        else:
            keyring.load_from(session)
        root_authority = keyring.root()
        issuing_authority = keyring.active_issuer()
        if not (settings.data_dir / "server.pem").exists():
            _issue_into_files(
                session,
                issuing_authority,
                _server_names(options.server_names),
                profile="server",
                validity=SERVER_VALIDITY,
                now=clock.now(),
                endpoints=endpoints,
                files=files,
            )
    # Files are written after the commit: a crash here leaves rows, and a rerun writes files.
    files.setdefault("root.pem", (pem_bundle(root_authority.certificate), 0o644))
    files.setdefault(
        "ca-chain.pem",
        (pem_bundle(*keyring.chain(issuing_authority)), 0o644),
    )
    written = []
    for name, (content, mode) in files.items():
        if name in ("root.pem", "ca-chain.pem") and (settings.data_dir / name).exists():
            continue
        write_file_atomically(settings.data_dir / name, content, mode)
        written.append(name)
    return InitReport(created, root_authority.ca_id, issuing_authority.ca_id, written)


def _add_ca(
    session: Session, ca: NewCA, *, kind: str, parent: str | None, kek: bytes, now: datetime
) -> None:
    certificate = ca.certificate
    session.add(
        CARecord(
            id=ca.ca_id,
            kind=kind,
            parent_id=parent,
            subject=certificate.subject.rfc4514_string(),
            serial=format_serial(certificate.serial_number),
            cert_der=certificate.public_bytes(Encoding.DER),
            key_wrapped=wrap_private_key(ca.private_key, kek=kek, label=ca.ca_id),
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            created_at=now,
            active=kind == "issuing",
            crl_number=0,
        )
    )


def _issue_into_files(
    session: Session,
    authority: Authority,
    names: RequestedNames,
    *,
    profile: str,
    validity: timedelta,
    now: datetime,
    endpoints: Endpoints,
    files: dict[str, tuple[bytes, int]],
) -> x509.Certificate:
    """Issue a leaf with a fresh P-256 key, store it, and queue `<profile>.pem` (leaf and
    issuing CA) and `<profile>-key.pem` (0600) for the data dir."""
    key = generate_private_key("ec-p256")
    certificate = sign_leaf(
        authority,
        public_key=key.public_key(),
        names=names,
        profile=PROFILES[profile],
        validity=validity,
        now=now,
        endpoints=endpoints,
    )
    store_certificate(
        session,
        certificate,
        ca_id=authority.ca_id,
        profile=profile,
        names=names,
        token_id=None,
        now=now,
        actor="mintca init",
    )
    files[f"{profile}.pem"] = (pem_bundle(certificate, authority.certificate), 0o644)
    files[f"{profile}-key.pem"] = (private_key_pem(key), 0o600)
    return certificate


def _authority(ca: NewCA, parent: str | None, *, active: bool) -> Authority:
    return Authority(
        ca_id=ca.ca_id,
        kind="issuing" if parent else "root",
        parent_id=parent,
        certificate=ca.certificate,
        signer=LocalSigner(ca.private_key),
        active=active,
    )


def _server_names(names: tuple[str, ...]) -> RequestedNames:
    ips = tuple(n for n in names if is_ip(n))
    dns = tuple(n.lower() for n in names if not is_ip(n))
    return RequestedNames(common_name=(dns or ips)[0], dns=dns, ips=ips)


def write_file_atomically(path: Path, content: bytes, mode: int) -> None:
    """Write to a temporary file with its final mode, then rename over `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)
