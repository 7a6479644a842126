"""`mintca acme eab create`: an EAB credential for ACME clients, over the admin API."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from app.cli.options import (
    CACertOption,
    CertOption,
    DataDirOption,
    KeyOption,
    UrlOption,
    load_settings,
)

acme_app = typer.Typer(name="acme", help="ACME (RFC 8555) accounts.", no_args_is_help=True)
eab_app = typer.Typer(
    name="eab", help="External account binding credentials.", no_args_is_help=True
)
acme_app.add_typer(eab_app)


@eab_app.command("create")
def eab_create(
    name: Annotated[
        list[str], typer.Option("--name", help="Allowed name or *.suffix (repeatable)")
    ],
    profile: Annotated[str | None, typer.Option(help="server (default) or peer")] = None,
    max_validity_days: Annotated[int | None, typer.Option()] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts")] = False,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    cacert: CACertOption = None,
) -> None:
    """Create an EAB credential; the HMAC key is printed once and stored only encrypted."""
    from app.cli.client import mtls_target, request

    body: dict[str, Any] = {"names": name}
    if profile is not None:
        body["profile"] = profile
    if max_validity_days is not None:
        body["max_validity_days"] = max_validity_days
    target = mtls_target(load_settings(data_dir), url, cert, key, cacert)
    created = request(target, "POST", "/admin/acme/eab", json=body).json()
    if as_json:
        typer.echo(json.dumps(created))
        return
    typer.echo(f"kid: {created['kid']}")
    typer.echo(f"hmac_key: {created['hmac_key']}")
