"""certbot (from PyPI) obtains a certificate from a live `mintca serve` over http-01 with EAB,
`openssl verify` accepts it, certbot revokes it and `openssl ocsp` then says revoked.

Names resolve through MINTCA_ACME_DNS_RESOLVER pointing at a small test DNS server that
answers A 127.0.0.1 for *.test.internal, so no /etc/hosts entry is needed; certbot's standalone
server answers the http-01 challenge on MINTCA_ACME_HTTP01_PORT."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.config import Settings
from tests.acme.dns_server import FakeDNS, running_dns
from tests.integration.live import LiveServer, free_port, start_server, stop_server

ZONE = "test.internal"
CLIENT_SECONDS = 120
pytestmark = pytest.mark.slow


def certbot() -> str:
    return str(Path(sys.executable).with_name("certbot"))


@pytest.fixture
def acme_dns() -> Iterator[FakeDNS]:
    with running_dns(ZONE) as server:
        yield server


@pytest.fixture
def http01_port() -> int:
    return free_port()


@pytest.fixture
def acme_server(
    initialised_settings: Settings, tmp_path: Path, acme_dns: FakeDNS, http01_port: int
) -> Iterator[LiveServer]:
    extra = {
        "MINTCA_ACME_DNS_RESOLVER": acme_dns.resolver,
        "MINTCA_ACME_HTTP01_PORT": str(http01_port),
    }
    process, server = start_server(initialised_settings, tmp_path / "serve.log", extra_env=extra)
    try:
        yield server
    finally:
        stop_server(process)


def run(args: list[str], server: LiveServer) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=CLIENT_SECONDS, env=env, check=False
    )
    assert result.returncode == 0, f"{args[:3]}\n{result.stdout}\n{result.stderr}\n{server.log()}"
    return result


def eab_credential(server: LiveServer, *, as_json: bool = False) -> tuple[str, str]:
    """`mintca acme eab create` against the live admin API; parse its `kid:`/`hmac_key:` lines
    (or, `as_json`, the `--json` output)."""
    result = run(
        [
            sys.executable, "-m", "app.cli", "acme", "eab", "create",
            "--name", f"*.{ZONE}", "--url", server.mtls_url, "--data-dir", str(server.data_dir),
            *(["--json"] if as_json else []),
        ],
        server,
    )  # fmt: skip
    if as_json:
        created = json.loads(result.stdout)
        return created["kid"], created["hmac_key"]
    lines = dict(line.split(": ", 1) for line in result.stdout.strip().splitlines())
    return lines["kid"], lines["hmac_key"]


def test_certbot_obtains_and_revokes_over_http01(
    acme_server: LiveServer, http01_port: int, tmp_path: Path
) -> None:
    kid, hmac_key = eab_credential(acme_server)
    name = f"web.{ZONE}"
    dirs = [
        "--config-dir", str(tmp_path / "le"), "--work-dir", str(tmp_path / "work"),
        "--logs-dir", str(tmp_path / "logs"),
    ]  # fmt: skip
    server_args = ["--server", f"{acme_server.public_url}/acme/directory", "--non-interactive"]
    run(
        [
            certbot(), "certonly", *server_args, *dirs,
            "--standalone", "--http-01-port", str(http01_port), "--http-01-address", "127.0.0.1",
            "--eab-kid", kid, "--eab-hmac-key", hmac_key,
            "--agree-tos", "--register-unsafely-without-email", "-d", name,
        ],
        acme_server,
    )  # fmt: skip
    live = next((tmp_path / "le" / "live").iterdir())
    cert, chain = live / "cert.pem", live / "chain.pem"
    root = str(acme_server.root_pem)
    verified = run(
        ["openssl", "verify", "-CAfile", root, "-untrusted", str(chain), str(cert)], acme_server
    )
    assert f"{cert}: OK" in verified.stdout

    run(
        [
            certbot(), "revoke", *server_args, *dirs,
            "--cert-path", str(cert), "--reason", "keycompromise", "--no-delete-after-revoke",
        ],
        acme_server,
    )  # fmt: skip
    ocsp = run(
        [
            "openssl", "ocsp", "-issuer", str(chain), "-cert", str(cert),
            "-url", f"{acme_server.public_url}/ocsp", "-CAfile", root,
        ],
        acme_server,
    )  # fmt: skip
    assert f"{cert}: revoked" in ocsp.stdout, ocsp.stdout
    assert "Reason: keyCompromise" in ocsp.stdout, ocsp.stdout
