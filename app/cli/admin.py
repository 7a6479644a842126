"""`mintca admin issue`: a role certificate (auditor, operator, admin) for a key made here; an
admin issues it over the mtls listener, and the grant is audited."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from app.ca.keys import KEY_TYPES, generate_private_key, private_key_pem
from app.ca.signer import hash_for_key
from app.cli.client import mtls_target, request
from app.cli.options import (
    CACertOption,
    CertOption,
    DataDirOption,
    KeyOption,
    UrlOption,
    load_settings,
)
from app.services.setup import write_file_atomically

admin_app = typer.Typer(name="admin", help="Role certificates for people and tools.")
ROLES = ("auditor", "operator", "admin")


@admin_app.command("issue")
def admin_issue(
    role: Annotated[str, typer.Option("--role", help="auditor, operator or admin")],
    name: Annotated[str, typer.Option("--name", help="The holder, e.g. alice (the CN)")],
    out: Annotated[Path, typer.Option("--out", help="Directory for key.pem, cert.pem, chain.pem")],
    validity_days: Annotated[int | None, typer.Option()] = None,
    key_type: Annotated[str, typer.Option(help=", ".join(KEY_TYPES))] = "ec-p256",
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    cacert: CACertOption = None,
) -> None:
    """Make a key and CSR here and have an admin certificate issue a role certificate."""
    if role not in ROLES:
        raise typer.BadParameter(f"choose one of {', '.join(ROLES)}", param_hint="--role")
    if key_type not in KEY_TYPES:
        raise typer.BadParameter(f"choose one of {', '.join(KEY_TYPES)}", param_hint="--key-type")
    private_key = generate_private_key(key_type)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(private_key, hash_for_key(private_key))
    )
    body: dict[str, object] = {"csr": csr.public_bytes(Encoding.PEM).decode(), "role": role}
    if validity_days is not None:
        body["validity_days"] = validity_days
    target = mtls_target(load_settings(data_dir), url, cert, key, cacert)
    issued = request(target, "POST", "/admin/role-certificates", json=body).json()
    out.mkdir(parents=True, exist_ok=True)
    write_file_atomically(out / "key.pem", private_key_pem(private_key), 0o600)
    write_file_atomically(out / "cert.pem", issued["certificate"].encode(), 0o644)
    write_file_atomically(out / "chain.pem", "".join(issued["chain"]).encode(), 0o644)
    typer.echo(f"serial     {issued['serial']}")
    typer.echo(f"role       {issued['profile']}")
    typer.echo(f"not after  {issued['not_after']}")
    typer.echo(f"wrote      {out / 'key.pem'}, {out / 'cert.pem'}, {out / 'chain.pem'}")
