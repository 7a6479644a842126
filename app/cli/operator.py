"""Operator commands over the admin API: tokens, certificates, CAs, CRLs."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from app.cli import authorities
from app.cli.client import Target, mtls_target, public_target, request
from app.cli.options import (
    CACertOption,
    CertOption,
    DataDirOption,
    KeyOption,
    UrlOption,
    load_settings,
)

token_app = typer.Typer(name="token", help="Enrollment tokens.", no_args_is_help=True)
cert_app = typer.Typer(name="cert", help="Issued certificates.", no_args_is_help=True)
ca_app = typer.Typer(name="ca", help="Certificate authorities.", no_args_is_help=True)
crl_app = typer.Typer(name="crl", help="Certificate revocation lists.", no_args_is_help=True)
GROUPS = (token_app, cert_app, ca_app, crl_app)


def _admin(
    data_dir: Path | None, url: str | None, cert: Path | None, key: Path | None, cacert: Path | None
) -> Target:
    return mtls_target(load_settings(data_dir), url, cert, key, cacert)


@token_app.command("create")
def token_create(
    name: Annotated[
        list[str], typer.Option("--name", help="Allowed name or *.suffix (repeatable)")
    ],
    profile: Annotated[list[str] | None, typer.Option(help="Allowed profile (repeatable)")] = None,
    ttl: Annotated[int, typer.Option(help="Seconds until the token expires")] = 3600,
    max_uses: Annotated[int, typer.Option(help="How many enrollments it allows")] = 1,
    max_validity_days: Annotated[int | None, typer.Option()] = None,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    cacert: CACertOption = None,
) -> None:
    """Create an enrollment token; the token is printed once and never stored."""
    body: dict[str, Any] = {"names": name, "ttl_seconds": ttl, "max_uses": max_uses}
    if profile:
        body["profile"] = profile
    if max_validity_days is not None:
        body["max_validity_days"] = max_validity_days
    created = request(
        _admin(data_dir, url, cert, key, cacert), "POST", "/admin/tokens", json=body
    ).json()
    typer.echo(created["token"])
    typer.echo(f"id {created['id']}, expires {created['expires_at']}", err=True)


def _row(item: dict[str, Any]) -> str:
    names = ",".join(item["names"])
    status, profile, not_after = item["status"], item["profile"], item["not_after"][:19]
    return f"{item['serial']:<42} {status:<8} {profile:<7} {not_after:<20} {names}"


@cert_app.command("list")
def cert_list(
    status: Annotated[str | None, typer.Option(help="good, revoked or expired")] = None,
    q: Annotated[str | None, typer.Option(help="Name substring")] = None,
    profile: str | None = None,
    ca_id: str | None = None,
    expiring_within_days: int | None = None,
    expiring: Annotated[
        str | None,
        typer.Option(
            help="Valid certificates whose notAfter is within this duration (e.g. 14d, 36h; "
            "rounded up to whole days), soonest first"
        ),
    ] = None,
    limit: int = 100,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    cacert: CACertOption = None,
) -> None:
    """List certificates as a table (all pages)."""
    if expiring is not None:
        expiring_within_days = _whole_days(expiring)
        status = status or "good"  # a revoked certificate needs no renewal
    params: dict[str, Any] = {
        k: v
        for k, v in {
            "status": status,
            "q": q,
            "profile": profile,
            "ca_id": ca_id,
            "expiring_within_days": expiring_within_days,
            "limit": limit,
        }.items()
        if v is not None
    }
    target = _admin(data_dir, url, cert, key, cacert)
    typer.echo(f"{'SERIAL':<42} {'STATUS':<8} {'PROFILE':<7} {'NOT AFTER':<20} NAMES")
    items: Iterable[dict[str, Any]] = _all_pages(target, params)
    if expiring is not None:
        # MintCA replaces its OCSP responder certificates itself: nothing for an operator.
        shown = (item for item in items if profile or item["profile"] != "ocsp")
        items = sorted(shown, key=lambda item: str(item["not_after"]))  # soonest first
    for item in items:
        typer.echo(_row(item))


def _all_pages(target: Target, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
    while True:
        page = request(target, "GET", "/admin/certificates", params=params).json()
        yield from page["items"]
        if not page["next_cursor"]:
            return
        params = {**params, "cursor": page["next_cursor"]}


def _whole_days(duration: str) -> int:
    """`14d`, `36h`, `90m` or seconds, as the whole days the admin API filters by."""
    from app.config import parse_duration

    try:
        seconds = parse_duration(duration).total_seconds()
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--expiring") from None
    return max(1, math.ceil(seconds / 86400))


@cert_app.command("show")
def cert_show(
    serial: str,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    cacert: CACertOption = None,
) -> None:
    """Show one certificate's details and PEM."""
    item = request(
        _admin(data_dir, url, cert, key, cacert), "GET", f"/admin/certificates/{serial}"
    ).json()
    for field in (
        "serial",
        "status",
        "profile",
        "ca_id",
        "common_name",
        "not_before",
        "not_after",
        "revoked_at",
        "reason",
        "invalidity_date",
    ):
        typer.echo(f"{field + ':':<17}{item[field] if item[field] is not None else '-'}")
    typer.echo(f"{'names:':<17}{', '.join(item['names'])}")
    typer.echo(item["pem"], nl=False)


@cert_app.command("revoke")
def cert_revoke(
    serial: Annotated[str | None, typer.Argument(help="Serial (hex); omit with --all")] = None,
    reason: Annotated[
        str, typer.Option(help="RFC 5280 reason name, e.g. keyCompromise")
    ] = "unspecified",
    invalidity_date: Annotated[str | None, typer.Option(help="ISO 8601 with a time zone")] = None,
    all_matching: Annotated[
        bool, typer.Option("--all", help="Revoke every certificate the filters match")
    ] = False,
    q: Annotated[str | None, typer.Option(help="With --all: name substring")] = None,
    token_id: Annotated[
        str | None, typer.Option(help="With --all: enrolled with this token")
    ] = None,
    ca_id: Annotated[str | None, typer.Option(help="With --all: issued by this CA")] = None,
    profile: Annotated[str | None, typer.Option(help="With --all: of this profile")] = None,
    dry_run: Annotated[bool, typer.Option(help="With --all: only count the matches")] = False,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    cacert: CACertOption = None,
) -> None:
    """Revoke a certificate (certificateHold puts it on hold), or with --all every certificate
    the filters match (at least one filter; --dry-run counts without revoking)."""
    target = _admin(data_dir, url, cert, key, cacert)
    if all_matching:
        if serial is not None:
            raise typer.BadParameter("give a serial or --all, not both")
        _revoke_all(
            target, reason, q=q, token_id=token_id, ca_id=ca_id, profile=profile, dry_run=dry_run
        )
        return
    if serial is None:
        raise typer.BadParameter("give the serial to revoke, or --all with filters")
    body: dict[str, Any] = {"reason": reason}
    if invalidity_date:
        body["invalidity_date"] = invalidity_date
    item = request(target, "POST", f"/admin/certificates/{serial}/revoke", json=body).json()
    typer.echo(f"revoked {item['serial']} ({item['reason']}) at {item['revoked_at']}")


def _revoke_all(
    target: Target,
    reason: str,
    *,
    q: str | None,
    token_id: str | None,
    ca_id: str | None,
    profile: str | None,
    dry_run: bool,
) -> None:
    given = {"q": q, "token_id": token_id, "ca_id": ca_id, "profile": profile}
    body = {
        "filter": {name: value for name, value in given.items() if value is not None},
        "reason": reason,
        "dry_run": dry_run,
    }
    done = request(target, "POST", "/admin/revocations", json=body).json()
    verb = "would revoke" if dry_run else "revoked"
    typer.echo(f"{verb} {done['count']} certificate(s)")
    for serial in done["serials"]:
        typer.echo(serial)
    if done["count"] > len(done["serials"]):
        typer.echo(f"... and {done['count'] - len(done['serials'])} more")
    for ca, number in sorted(done["crl_numbers"].items()):
        typer.echo(f"CA {ca}: CRL {number}", err=True)


@cert_app.command("unhold")
def cert_unhold(
    serial: str,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    cacert: CACertOption = None,
) -> None:
    """Lift a certificateHold."""
    item = request(
        _admin(data_dir, url, cert, key, cacert),
        "POST",
        f"/admin/certificates/{serial}/unhold",
        json={},  # the mtls listener takes writes as application/json only (CSRF guard)
    ).json()
    typer.echo(f"released {item['serial']} from hold; status {item['status']}")


@ca_app.command("list")
def ca_list(
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    cacert: CACertOption = None,
) -> None:
    """List the CAs."""
    cas = request(_admin(data_dir, url, cert, key, cacert), "GET", "/admin/cas").json()
    typer.echo(f"{'CA ID':<42} {'KIND':<8} {'ACTIVE':<7} {'NOT AFTER':<20} SUBJECT")
    for ca in cas:
        active, not_after = "yes" if ca["active"] else "", ca["not_after"][:19]
        typer.echo(f"{ca['ca_id']:<42} {ca['kind']:<8} {active:<7} {not_after:<20} {ca['subject']}")


@crl_app.command("fetch")
def crl_fetch(
    ca_id: Annotated[str, typer.Argument(help="CA id (see `mintca ca list`)")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the DER CRL")] = Path(
        "crl.der"
    ),
    delta: Annotated[bool, typer.Option(help="Fetch the delta CRL")] = False,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    cacert: CACertOption = None,
) -> None:
    """Download a CA's latest full (or delta) CRL from the public listener."""
    target = public_target(load_settings(data_dir), url, cacert)
    path = f"/crl/{ca_id}-delta.crl" if delta else f"/crl/{ca_id}.crl"
    response = request(target, "GET", path)
    out.write_bytes(response.content)
    typer.echo(f"wrote {out} ({len(response.content)} bytes, ETag {response.headers.get('etag')})")


ca_app.command("rotate")(authorities.rotate)
ca_app.command("root-crl")(authorities.root_crl)
