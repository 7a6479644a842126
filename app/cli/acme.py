"""`mintca acme eab create`: an EAB credential for ACME clients, over the admin API; printed
as lines, JSON, or a cert-manager Issuer with its Secret (app.cli.acme_manifest)."""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.cli.options import (
    CACertOption,
    CertOption,
    DataDirOption,
    KeyOption,
    UrlOption,
    load_settings,
)

if TYPE_CHECKING:
    from app.cli.acme_manifest import CertManagerIssuer, IssuerKind
    from app.cli.client import Target
    from app.config import Settings

acme_app = typer.Typer(name="acme", help="ACME (RFC 8555) accounts.", no_args_is_help=True)
eab_app = typer.Typer(
    name="eab", help="External account binding credentials.", no_args_is_help=True
)
acme_app.add_typer(eab_app)


class OutputFormat(enum.StrEnum):
    text = "text"
    json = "json"
    cert_manager = "cert-manager"


class IssuerKindChoice(enum.StrEnum):
    issuer = "Issuer"
    cluster = "ClusterIssuer"


@eab_app.command("create")
def eab_create(
    name: Annotated[
        list[str], typer.Option("--name", help="Allowed name or *.suffix (repeatable)")
    ],
    profile: Annotated[str | None, typer.Option(help="server (default) or peer")] = None,
    max_validity_days: Annotated[int | None, typer.Option()] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Same as --format json")] = False,
    output: Annotated[
        OutputFormat,
        typer.Option("--format", help="text, json, or cert-manager (a Secret and an Issuer)"),
    ] = OutputFormat.text,
    issuer_kind: Annotated[
        IssuerKindChoice, typer.Option(help="cert-manager: Issuer or ClusterIssuer")
    ] = IssuerKindChoice.issuer,
    issuer_name: Annotated[str, typer.Option(help="cert-manager: the Issuer's name")] = "mintca",
    namespace: Annotated[
        str | None,
        typer.Option(
            help="cert-manager: the Issuer's namespace (default: default), or a "
            "ClusterIssuer's cluster resource namespace (default: cert-manager)"
        ),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(
            help="cert-manager: ACME directory URL (default: MINTCA_PUBLIC_URL/acme/"
            "directory, https when MINTCA_PUBLIC_TLS)"
        ),
    ] = None,
    ca_bundle: Annotated[
        Path | None,
        typer.Option(help="cert-manager: PEM CAs for caBundle (default: the --cacert file)"),
    ] = None,
    ingress_class: Annotated[
        str, typer.Option(help="cert-manager: ingressClassName of the http01 solver")
    ] = "nginx",
    email: Annotated[str | None, typer.Option(help="cert-manager: the account's email")] = None,
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
    settings = load_settings(data_dir)
    target = mtls_target(settings, url, cert, key, cacert)
    if as_json:
        output = OutputFormat.json
    issuer = None
    if output is OutputFormat.cert_manager:
        # Checked before the credential is made: bad options create nothing.
        kind: IssuerKind = "ClusterIssuer" if issuer_kind is IssuerKindChoice.cluster else "Issuer"
        issuer = _cert_manager_issuer(
            settings, target, kind, issuer_name, namespace, server, ca_bundle, ingress_class, email
        )
    created = request(target, "POST", "/admin/acme/eab", json=body).json()
    if issuer is not None:
        from app.cli.acme_manifest import format_cert_manager

        manifest = format_cert_manager(issuer, kid=created["kid"], hmac_key=created["hmac_key"])
        typer.echo(manifest, nl=False)
    elif output is OutputFormat.json:
        typer.echo(json.dumps(created))
    else:
        typer.echo(f"kid: {created['kid']}")
        typer.echo(f"hmac_key: {created['hmac_key']}")


def _cert_manager_issuer(
    settings: Settings,
    target: Target,
    kind: IssuerKind,
    name: str,
    namespace: str | None,
    server: str | None,
    ca_bundle: Path | None,
    ingress_class: str,
    email: str | None,
) -> CertManagerIssuer:
    """The Issuer's values, checked. The default caBundle is the file this command trusts for
    the mtls listener: both listeners present the same server certificate (server.pem)."""
    from app.cli.acme_manifest import CLUSTER_RESOURCE_NAMESPACE, CertManagerIssuer, check_names
    from app.cli.client import default_public_url, fail

    bundle_path = ca_bundle or target.cacert
    try:
        bundle = bundle_path.read_bytes() if bundle_path else b""
    except OSError as exc:
        raise fail(f"cannot read the CA bundle: {exc}") from exc
    if b"-----BEGIN CERTIFICATE-----" not in bundle:
        raise fail(f"no PEM certificate in the CA bundle {bundle_path}")
    directory = server or f"{default_public_url(settings)}/acme/directory"
    if not directory.startswith("https://"):
        typer.secho(
            f"warning: {directory} is not https: cert-manager's caBundle applies to https "
            "only (set MINTCA_PUBLIC_TLS=true, or pass --server https://…)",
            err=True,
            fg=typer.colors.YELLOW,
        )
    default_namespace = CLUSTER_RESOURCE_NAMESPACE if kind == "ClusterIssuer" else "default"
    issuer = CertManagerIssuer(
        kind=kind,
        name=name,
        namespace=namespace or default_namespace,
        server=directory,
        ca_bundle_pem=bundle,
        ingress_class=ingress_class,
        email=email,
    )
    try:
        check_names(issuer)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    return issuer
