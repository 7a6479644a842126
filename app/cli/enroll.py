"""`mintca enroll`: make a key and CSR here, enroll with a token, write key, cert and chain."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any

import typer

from app.ca.key_types import KEY_TYPES
from app.cli.client import public_target, request
from app.cli.options import CACertOption, DataDirOption, UrlOption, load_settings


def build_csr(names: list[str], key_type: str) -> tuple[bytes, bytes]:
    """A key and a CSR with the first name as CN and every name as a SAN; returns PEMs."""
    # Imported here: `mintca --help` must not pay for cryptography.
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    from app.ca.keys import generate_private_key, private_key_pem
    from app.ca.signer import hash_for_key

    key = generate_private_key(key_type)
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            if "://" in name:
                sans.append(x509.UniformResourceIdentifier(name))
            elif "@" in name:
                sans.append(x509.RFC822Name(name))
            else:
                sans.append(x509.DNSName(name))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hash_for_key(key))
    )
    return private_key_pem(key), csr.public_bytes(Encoding.PEM)


def enroll(
    token: Annotated[str, typer.Option("--token", help="Enrollment token", envvar="MINTCA_TOKEN")],
    name: Annotated[list[str], typer.Option("--name", help="Name to certify (repeatable)")],
    out: Annotated[Path, typer.Option("--out", help="Directory for key.pem, cert.pem, chain.pem")],
    profile: Annotated[str | None, typer.Option(help="server, client, peer or admin")] = None,
    validity_days: Annotated[int | None, typer.Option()] = None,
    key_type: Annotated[str, typer.Option(help=", ".join(KEY_TYPES))] = "ec-p256",
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    cacert: CACertOption = None,
) -> None:
    """Enroll a new certificate with a token."""
    if key_type not in KEY_TYPES:
        raise typer.BadParameter(f"choose one of {', '.join(KEY_TYPES)}", param_hint="--key-type")
    key_pem, csr_pem = build_csr(name, key_type)
    body: dict[str, Any] = {"csr": csr_pem.decode()}
    if profile:
        body["profile"] = profile
    if validity_days is not None:
        body["validity_days"] = validity_days
    target = public_target(load_settings(data_dir), url, cacert)
    issued = request(
        target,
        "POST",
        "/v1/certificates",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    ).json()
    from app.files import write_file

    out.mkdir(parents=True, exist_ok=True)
    write_file(out / "key.pem", key_pem, 0o600)
    write_file(out / "cert.pem", issued["certificate"].encode(), 0o644)
    write_file(out / "chain.pem", "".join(issued["chain"]).encode(), 0o644)
    typer.echo(f"serial     {issued['serial']}")
    typer.echo(f"profile    {issued['profile']}")
    typer.echo(f"not after  {issued['not_after']}")
    typer.echo(f"wrote      {out / 'key.pem'}, {out / 'cert.pem'}, {out / 'chain.pem'}")
