"""`mintca renew`: renew a certificate over the mtls listener with the certificate itself, and
write the new key and certificate atomically; `--daemon` renews at two thirds of the lifetime
(with jitter) for ever, running `--exec` after each renewal (e.g. a service reload)."""

from __future__ import annotations

import os
import random
import shlex
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from app.ca.keys import KEY_TYPES, PrivateKey, generate_private_key, private_key_pem
from app.ca.signer import hash_for_key
from app.cli.client import Target, mtls_target, request
from app.cli.options import (
    CACertOption,
    CertOption,
    DataDirOption,
    KeyOption,
    UrlOption,
    load_settings,
)

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


def write_files_atomically(files: list[tuple[Path, bytes, int]]) -> None:
    """Write every file to an unpredictable temporary name in its own directory (O_EXCL, its
    final mode from the start), fsync each, then rename them into place and fsync the
    directories: a reader sees the old file or the new one, never half of one.
    (A private helper until the shared one from the input-hardening work is merged.)"""
    staged: list[tuple[str, Path]] = []
    try:
        for path, content, mode in files:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            staged.append((tmp, path))
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), mode)
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
        for tmp, path in staged:
            os.replace(tmp, path)
        staged = []
        for directory in {path.parent for path, _, _ in files}:
            fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    finally:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)


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
        write_files_atomically(files)
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


def renew(
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    cacert: CACertOption = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write key.pem, cert.pem, chain.pem here (default: in place)"),
    ] = None,
    reuse_key: Annotated[bool, typer.Option("--reuse-key", help="Keep the current key")] = False,
    key_type: Annotated[
        str | None, typer.Option(help=f"New key: {', '.join(KEY_TYPES)} (default: as now)")
    ] = None,
    daemon: Annotated[
        bool, typer.Option("--daemon", help="Stay running; renew at 2/3 of each lifetime")
    ] = False,
    exec_command: Annotated[
        str | None, typer.Option("--exec", help="Command to run after each renewal")
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="With --daemon: stop after the first renewal")
    ] = False,
) -> None:
    """Renew a certificate with itself over the mtls listener (default: the admin bundle)."""
    if key_type is not None and key_type not in KEY_TYPES:
        raise typer.BadParameter(f"choose one of {', '.join(KEY_TYPES)}", param_hint="--key-type")
    target = mtls_target(load_settings(data_dir), url, cert, key, cacert)
    renewer = Renewer(target, out, reuse_key, key_type)
    if not daemon:
        renewer.renew()
        run_exec(exec_command)
        return
    status = run_daemon(
        renewer.renew,
        renewer.current(),
        now=lambda: datetime.now(UTC),
        sleep=time.sleep,
        rng=random.SystemRandom(),
        exec_command=exec_command,
        max_renewals=1 if once else None,
    )
    raise typer.Exit(status)
