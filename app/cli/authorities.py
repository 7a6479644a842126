"""`mintca ca rotate` and `mintca ca root-crl`: over the admin API, or, with `--root-key`,
locally against the database and the KEK (an offline root's key never travels over HTTP)."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.ca.key_types import KEY_TYPES
from app.cli.client import fail, mtls_target, request
from app.cli.options import (
    CACertOption,
    CertOption,
    DataDirOption,
    KeyOption,
    UrlOption,
    load_settings,
)

if TYPE_CHECKING:
    from app.ca.keys import PrivateKey
    from app.config import Settings
    from app.services.authorities import AuthorityService

RootKeyOption = Annotated[
    Path | None,
    typer.Option(
        "--root-key",
        help="The offline root's key file: sign here, against the database, with the KEK",
        exists=True,
        dir_okay=False,
    ),
]


def _local_actor(command: str) -> str:
    """How the audit log names an operator who signed locally with the root key."""
    return f"local:{getpass.getuser()} (mintca ca {command} --root-key)"


def _check_key_type(value: str | None) -> str | None:
    if value is not None and value not in KEY_TYPES:
        raise typer.BadParameter(f"choose one of {', '.join(KEY_TYPES)}")
    return value


def _print_ca(ca: dict[str, Any]) -> None:
    typer.echo(f"rotated: issuing CA {ca['ca_id']} is now active")
    typer.echo(f"  subject:   {ca['subject']}")
    typer.echo(f"  not after: {ca['not_after']}")
    typer.echo(f"  CRL:       {ca['crl_url']}")


def rotate(
    key_type: Annotated[
        str | None,
        typer.Option(callback=_check_key_type, help="Key of the new CA (default: as before)"),
    ] = None,
    validity_days: Annotated[
        int, typer.Option(min=1, max=36500, help="Never past the root's notAfter")
    ] = 1825,
    root_key: RootKeyOption = None,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    cacert: CACertOption = None,
) -> None:
    """Make a new issuing CA under the root and make it the active one everywhere; the
    previous CA keeps its CRL and OCSP for what it issued."""
    settings = load_settings(data_dir)
    if root_key is None:
        body: dict[str, Any] = {"validity_days": validity_days}
        if key_type is not None:
            body["key_type"] = key_type
        target = mtls_target(settings, url, cert, key, cacert)
        _print_ca(request(target, "POST", "/admin/cas/rotate", json=body).json())
        return
    from datetime import timedelta

    from app.ca.issuance import Endpoints
    from app.errors import MintCAError

    with _local_authorities(settings, root_key) as (authorities, private_key):
        try:
            authority = authorities.rotate(
                actor=_local_actor("rotate"),
                key_type=key_type,
                validity=timedelta(days=validity_days),
                root_key=private_key,
            )
        except MintCAError as exc:
            raise fail(exc.detail) from None
    certificate = authority.certificate
    _print_ca(
        {
            "ca_id": authority.ca_id,
            "subject": certificate.subject.rfc4514_string(),
            "not_after": certificate.not_valid_after_utc.isoformat(),
            "crl_url": Endpoints(settings.base_url).crl(authority.ca_id),
        }
    )


def root_crl(
    root_key: Annotated[
        Path,
        typer.Option("--root-key", help="The offline root's key file", exists=True),
    ],
    data_dir: DataDirOption = None,
) -> None:
    """Re-sign the offline root's CRL (valid 365 days): run it well within that year."""
    from app.errors import MintCAError

    settings = load_settings(data_dir)
    with _local_authorities(settings, root_key) as (authorities, private_key):
        try:
            crl = authorities.sign_root_crl(private_key, actor=_local_actor("root-crl"))
        except MintCAError as exc:
            raise fail(exc.detail) from None
    typer.echo(f"signed CRL {crl.number} of root CA {crl.ca_id}, next update {crl.next_update}")


@contextmanager
def _local_authorities(
    settings: Settings, root_key: Path
) -> Iterator[tuple[AuthorityService, PrivateKey]]:
    """The authority service on the configured database and KEK, and the root key read from
    its file; the key lives only in this short process."""
    from app.ca.issuance import Endpoints
    from app.ca.keys import load_private_key_pem
    from app.clock import SystemClock
    from app.db.engine import Database
    from app.errors import MintCAError
    from app.services.authorities import AuthorityService
    from app.services.crls import CRLService
    from app.services.hsm import open_token
    from app.services.keyring import Keyring, load_kek

    try:
        private_key = load_private_key_pem(root_key.read_bytes())
    except MintCAError as exc:
        raise fail(f"{root_key}: {exc.detail}") from None
    db = Database(settings.effective_database_url, pool_size=1)
    try:
        keyring = Keyring(db, load_kek(settings), open_token(settings))
        keyring.load()
        clock, endpoints = SystemClock(), Endpoints(settings.base_url)
        crls = CRLService(db, clock, keyring, endpoints, settings.crl_validity)
        yield AuthorityService(db, clock, keyring, crls, endpoints), private_key
    finally:
        db.dispose()
