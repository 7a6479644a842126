"""`mintca init`: schema, KEK, root and issuing CA, the mtls server certificate, the first
admin certificate and first CRLs, in one transaction; then the files of the data dir."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from sqlalchemy import text
from sqlalchemy.orm import Session

from app.ca.bootstrap import NewCA, check_ca_name, create_issuing_ca, create_root
from app.ca.issuance import Endpoints, pem_bundle
from app.ca.keys import generate_private_key, private_key_pem
from app.ca.names import RequestedNames, check_name_limits, is_dns_name, is_ip
from app.ca.profiles import PROFILES, with_caller_identity
from app.ca.serials import format_serial
from app.clock import Clock
from app.config import Settings
from app.db.cas import any_ca_exists
from app.db.engine import Database
from app.db.migrate import upgrade
from app.errors import ConfigurationError, MalformedCSRError
from app.files import write_file
from app.services.audit import record
from app.services.authorities import ROOT_CRL_VALIDITY, add_ca
from app.services.certificates import sign_leaf, store_certificate
from app.services.crls import CRLService
from app.services.hsm import open_token
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
    offline_root: bool = False  # the root key goes to root-key.pem, never to the database


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
    never enter the database, a server certificate of its own).

    Raises:
        ConfigurationError: a CA name, admin name or server name that cannot be certified
            (checked before anything is written).
    """
    check_options(options)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.effective_database_url)
    kek = load_kek(settings, create=True)
    token = open_token(settings)
    db = Database(settings.effective_database_url, pool_size=1)
    try:
        return _initialise(settings, options, clock, db, Keyring(db, kek, token))
    finally:
        db.dispose()


def check_options(options: InitOptions) -> None:
    """Raises:
    ConfigurationError: naming which option cannot be certified."""
    check_ca_name(options.name)
    for name in options.server_names:
        if not (is_ip(name) or is_dns_name(name, allow_wildcard=False)):
            raise ConfigurationError(f"--server-name {name!r} is neither a DNS name nor an IP")
    try:
        check_name_limits(RequestedNames(common_name=options.admin_name))
        check_name_limits(_server_names(options.server_names))
    except MalformedCSRError as exc:
        raise ConfigurationError(f"init options: {exc.detail}") from None


def _initialise(
    settings: Settings, options: InitOptions, clock: Clock, db: Database, keyring: Keyring
) -> InitReport:
    endpoints = Endpoints(settings.base_url, settings.trust_domain)
    kek, token = keyring.kek, keyring.token
    files: dict[str, tuple[bytes, int]] = {}
    written: list[str] = []
    with _removed_on_failure(settings.data_dir, written), db.write() as session:
        if not db.is_sqlite:
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_INIT_LOCK})
        created = not any_ca_exists(session)
        if created:
            now = clock.now()
            # With a token, CA keys are made inside it (an offline root's key stays a file).
            root = create_root(
                name=options.name,
                key_type=options.root_key,
                now=now,
                key_signer=token.generate(options.root_key)
                if token and not options.offline_root
                else None,
            )
            issuing = create_issuing_ca(
                key_signer=token.generate(options.issuing_key) if token else None,
                name=options.name,
                key_type=options.issuing_key,
                root=root,
                now=now,
                endpoints=endpoints,
                ocsp=not options.offline_root,
            )
            offline = options.offline_root
            add_ca(
                session,
                root,
                kind="root",
                parent=None,
                kek=kek,
                now=now,
                active=False,
                offline=offline,
            )
            add_ca(
                session, issuing, kind="issuing", parent=root.ca_id, kek=kek, now=now, active=True
            )
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
            root_crls = CRLService(db, clock, keyring, endpoints, ROOT_CRL_VALIDITY)
            (root_crls if offline else crls).publish(session, root.ca_id, now=now)
            crls.publish(session, issuing.ca_id, now=now)
            if offline:  # before the commit: a root whose key is lost can never sign again
                assert root.private_key is not None  # an offline root is never made in a token
                files["root-key.pem"] = (private_key_pem(root.private_key), 0o600)
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
                    "offline_root": offline,
                },
            )
        else:
            keyring.load_from(session)
        root_authority = keyring.root()
        issuing_authority = keyring.loaded_active_issuer()
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
        # Key files before the commit: if one cannot be written, the transaction rolls back
        # and no certificate exists whose key was lost (a rerun starts afresh).
        _write_files(settings.data_dir, files, written)
    # The CA files are public and derived from the database: written after the commit (a
    # rerun writes them if this process stops here). root.pem marks an initialised data dir.
    public = {
        "root.pem": (pem_bundle(root_authority.certificate), 0o644),
        "ca-chain.pem": (pem_bundle(*keyring.chain(issuing_authority)), 0o644),
    }
    _write_files(settings.data_dir, public, written, keep_existing=True)
    return InitReport(created, root_authority.ca_id, issuing_authority.ca_id, written)


@contextlib.contextmanager
def _removed_on_failure(data_dir: Path, written: list[str]) -> Iterator[None]:
    """If the transaction fails (even at its commit), remove the files written for it: no
    file may name a certificate that was not stored."""
    try:
        yield
    except BaseException:
        for name in written:
            (data_dir / name).unlink(missing_ok=True)
        raise


def _write_files(
    data_dir: Path,
    files: dict[str, tuple[bytes, int]],
    written: list[str],
    *,
    keep_existing: bool = False,
) -> None:
    """Write each file durably, appending its name to `written` as soon as it exists."""
    for name, (content, mode) in files.items():
        if keep_existing and (data_dir / name).exists():
            continue
        write_file(data_dir / name, content, mode)
        written.append(name)


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
        signer=ca.signer,
        active=active,
        in_token=ca.private_key is None,
    )


def _server_names(names: tuple[str, ...]) -> RequestedNames:
    ips = tuple(n for n in names if is_ip(n))
    dns = tuple(n.lower() for n in names if not is_ip(n))
    return RequestedNames(common_name=(dns or ips)[0], dns=dns, ips=ips)
