"""Break-glass: a fresh admin bundle issued on the CA host, straight through the services
layer, for when every admin key is lost (`mintca admin recover`). It needs what only the CA
host has (the database and the KEK), never the admin API, and it is audited like any action."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from app.ca.issuance import Endpoints, pem_bundle
from app.ca.keys import generate_private_key, private_key_pem
from app.ca.names import RequestedNames, check_name_limits
from app.ca.profiles import PROFILES
from app.ca.serials import format_serial
from app.clock import Clock
from app.config import Settings
from app.db.engine import Database
from app.errors import ConfigurationError, MalformedCSRError
from app.files import PRIVATE, PUBLIC, write_file
from app.services.audit import record
from app.services.certificates import sign_leaf, store_certificate
from app.services.hsm import open_token
from app.services.keyring import Keyring, load_kek
from app.services.setup import ADMIN_VALIDITY

RECOVER_ACTOR = "cli:admin-recover"


@dataclass(frozen=True)
class RecoveredAdmin:
    serial: str
    certificate_path: Path
    key_path: Path


def recover_admin(settings: Settings, *, name: str, out_dir: Path, clock: Clock) -> RecoveredAdmin:
    """Issue an `admin` certificate with a new key, write `admin.pem` (leaf, issuing CA) and
    `admin-key.pem` (0600) to `out_dir`, and store the certificate and its audit rows.

    The files are written before the commit: if a write fails nothing is stored, and if the
    commit fails the files are removed, so an admin certificate never exists without its key.

    Raises:
        ConfigurationError: no or a wrong KEK, or a name that cannot be a CN.
        ServiceUnavailableError: the database holds no issuing CA (run `mintca init`).
    """
    names = RequestedNames(common_name=name)
    try:
        check_name_limits(names)
    except MalformedCSRError as exc:
        raise ConfigurationError(f"--name: {exc.detail}") from None
    kek = load_kek(settings)
    db = Database(settings.effective_database_url, pool_size=1)
    try:
        keyring = Keyring(db, kek, open_token(settings))
        keyring.load()
        authority = keyring.active_issuer()
        key = generate_private_key("ec-p256")
        now = clock.now()
        certificate = sign_leaf(
            authority,
            public_key=key.public_key(),
            names=names,
            profile=PROFILES["admin"],
            validity=ADMIN_VALIDITY,
            now=now,
            endpoints=Endpoints(settings.base_url),
        )
        serial = format_serial(certificate.serial_number)
        out_dir.mkdir(parents=True, exist_ok=True)
        key_path, certificate_path = out_dir / "admin-key.pem", out_dir / "admin.pem"
        written: list[Path] = []
        try:
            with db.write() as session:
                store_certificate(
                    session,
                    certificate,
                    ca_id=authority.ca_id,
                    profile="admin",
                    names=names,
                    token_id=None,
                    now=now,
                    actor=RECOVER_ACTOR,
                )
                record(
                    session,
                    at=now,
                    actor=RECOVER_ACTOR,
                    action="admin.recover",
                    target=serial,
                    details={"name": name, "ca_id": authority.ca_id},
                )
                write_file(key_path, private_key_pem(key), PRIVATE)
                written.append(key_path)
                write_file(certificate_path, pem_bundle(certificate, authority.certificate), PUBLIC)
                written.append(certificate_path)
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        return RecoveredAdmin(serial, certificate_path, key_path)
    finally:
        db.dispose()
