"""What `mintca renew` does: renew a certificate over the mtls listener with the certificate
itself, write the new key and certificate atomically, and, as a daemon, renew at two thirds of
the lifetime (with jitter), running `--exec` after each renewal (e.g. a service reload).
Imported by the command only when it runs (app/cli/renew.py), so `mintca --help` stays fast."""

from __future__ import annotations

import random
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import typer
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from app.ca.keys import KEY_TYPES, PrivateKey, generate_private_key, private_key_pem
from app.ca.signer import hash_for_key
from app.cli.client import Target, request
from app.files import write_files

RENEW_AT = 2 / 3  # of the lifetime, as certbot, cert-manager and step do
JITTER = 1 / 20  # ± this share of the lifetime, so a fleet issued together does not renew together
MAX_SLEEP = timedelta(hours=1)  # wake up at least hourly: suspend and clock steps happen
RETRY_AFTER = timedelta(minutes=5)


def key_type_of(key: PrivateKey) -> str:
    """The `--key-type` of an existing key, so a new key is of the same kind by default."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {"secp384r1": "ec-p384"}.get(key.curve.name, "ec-p256")
    if isinstance(key, rsa.RSAPrivateKey):
        return f"rsa-{key.key_size}" if f"rsa-{key.key_size}" in KEY_TYPES else "rsa-2048"
    return "ed25519"


def build_renewal_csr(certificate: x509.Certificate, key: PrivateKey) -> bytes:
    """A CSR with the certificate's subject and no SAN: renewal keeps the names anyway, and a
    CSR may name only what the certificate has (README: renewal)."""
    csr = x509.CertificateSigningRequestBuilder().subject_name(certificate.subject)
    return csr.sign(key, hash_for_key(key)).public_bytes(Encoding.PEM)


@dataclass
class Renewer:
    """One renewal: read the current certificate and key, ask for a successor, write it."""

    target: Target
    out: Path | None
    reuse_key: bool
    key_type: str | None

    @property
    def cert_path(self) -> Path:
        assert self.target.cert is not None
        return self.target.cert

    def current(self) -> x509.Certificate:
        return x509.load_pem_x509_certificates(self.cert_path.read_bytes())[0]

    def renew(self) -> x509.Certificate:
        assert self.target.key is not None
        old_key = serialization.load_pem_private_key(self.target.key.read_bytes(), password=None)
        if not isinstance(
            old_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
        ):
            raise typer.BadParameter("an RSA, EC or Ed25519 key", param_hint="--key")
        key = (
            old_key
            if self.reuse_key
            else generate_private_key(self.key_type or key_type_of(old_key))
        )
        csr = build_renewal_csr(self.current(), key)
        issued = request(self.target, "POST", "/v1/renew", json={"csr": csr.decode()}).json()
        leaf, chain = issued["certificate"], issued["chain"]
        if self.out is None:  # in place: the cert file gets leaf and issuing CA, as init writes
            cert_path, key_path = self.cert_path, self.target.key
            files = [(cert_path, (leaf + "".join(chain[:-1])).encode(), 0o644)]
        else:
            self.out.mkdir(parents=True, exist_ok=True)
            cert_path, key_path = self.out / "cert.pem", self.out / "key.pem"
            files = [
                (cert_path, leaf.encode(), 0o644),
                (self.out / "chain.pem", "".join(chain).encode(), 0o644),
            ]
        if not (self.reuse_key and self.out is None):
            files.insert(0, (key_path, private_key_pem(key), 0o600))
        write_files(files)
        # The next renewal (daemon) authenticates with what was just written.
        self.target = Target(self.target.url, self.target.cacert, cert_path, key_path)
        typer.echo(f"serial     {issued['serial']}")
        typer.echo(f"profile    {issued['profile']}")
        typer.echo(f"not after  {issued['not_after']}")
        typer.echo(f"wrote      {', '.join(str(f[0]) for f in files)}")
        return x509.load_pem_x509_certificate(leaf.encode())


def renewal_due(certificate: x509.Certificate, rng: random.Random) -> datetime:
    """Two thirds into the lifetime, moved by up to ± JITTER of it."""
    start, end = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    lifetime = end - start
    return start + lifetime * RENEW_AT + lifetime * JITTER * rng.uniform(-1, 1)


def run_exec(exec_command: str | None) -> None:
    """Run the operator's command (no shell), e.g. `systemctl reload nginx`."""
    if not exec_command:
        return
    command = shlex.split(exec_command)
    done = subprocess.run(command, check=False)  # noqa: S603 - the operator's own command
    if done.returncode != 0:
        typer.echo(f"warning: {command[0]} exited {done.returncode}", err=True)


def run_daemon(
    renew: Callable[[], x509.Certificate],
    current: x509.Certificate,
    *,
    now: Callable[[], datetime],
    sleep: Callable[[float], None],
    rng: random.Random,
    exec_command: str | None,
    max_renewals: int | None = None,
) -> int:
    """Renew whenever due, run `exec_command` after each renewal; stop after `max_renewals`
    (tests, `--once`) or when the certificate expired before it could be renewed. Returns the
    exit status."""
    renewals = 0
    due = renewal_due(current, rng)
    while max_renewals is None or renewals < max_renewals:
        wait = (due - now()).total_seconds()
        if wait > 0:
            sleep(min(wait, MAX_SLEEP.total_seconds()))
            continue
        try:
            current = renew()
        except typer.Exit:  # the error line is already printed
            if now() >= current.not_valid_after_utc:
                typer.echo("error: the certificate expired before it could be renewed", err=True)
                return 1
            if max_renewals is not None and renewals + 1 >= max_renewals:
                return 1
            due = now() + RETRY_AFTER
            continue
        renewals += 1
        due = renewal_due(current, rng)
        run_exec(exec_command)
        typer.echo(f"next renewal due {due.isoformat(timespec='seconds')}", err=True)
    return 0
