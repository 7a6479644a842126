"""lego (the Debian package) obtains certificates from a live `mintca serve` with EAB over
http-01 and over dns-01; `openssl verify` accepts each. For dns-01, lego's `exec` provider
writes the TXT value into a file that the test DNS server answers from, and both lego and
MintCA look names up on that server."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.config import Settings
from tests.acme.dns_server import FakeDNS, running_dns
from tests.integration.live import LiveServer, free_port, start_server, stop_server
from tests.integration.test_acme_certbot import ZONE, eab_credential

CLIENT_SECONDS = 120
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("lego") is None, reason="lego is not installed (apt lego)"),
]
EXEC_SCRIPT = """#!/bin/sh
# lego's exec provider: present|cleanup <fqdn> <value>
[ "$1" = present ] && printf %s "$3" > "{dir}/$(echo "$2" | sed 's/\\.$//')"
exit 0
"""


@pytest.fixture
def lego_dns(tmp_path: Path) -> Iterator[FakeDNS]:
    with running_dns(ZONE) as server:
        server.txt_dir = tmp_path / "txt"
        server.txt_dir.mkdir()
        yield server


@pytest.fixture
def http01_port() -> int:
    return free_port()


@pytest.fixture
def tlsalpn01_port() -> int:
    return free_port()


@pytest.fixture
def lego_server(
    initialised_settings: Settings,
    tmp_path: Path,
    lego_dns: FakeDNS,
    http01_port: int,
    tlsalpn01_port: int,
) -> Iterator[LiveServer]:
    extra = {
        "MINTCA_ACME_DNS_RESOLVER": lego_dns.resolver,
        "MINTCA_ACME_HTTP01_PORT": str(http01_port),
        "MINTCA_ACME_TLSALPN01_PORT": str(tlsalpn01_port),
    }
    process, server = start_server(initialised_settings, tmp_path / "serve.log", extra_env=extra)
    try:
        yield server
    finally:
        stop_server(process)


def lego(
    server: LiveServer, path: Path, name: str, challenge: list[str], env: dict[str, str]
) -> Path:
    kid, hmac_key = eab_credential(server, as_json=True)
    args = [
        "lego", "--server", f"{server.public_url}/acme/directory", "--accept-tos",
        "--email", f"ops@{ZONE}", "--eab", "--kid", kid, "--hmac", hmac_key,
        "--key-type", "ec256", "--domains", name, "--path", str(path), *challenge, "run",
    ]  # fmt: skip
    result = subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=CLIENT_SECONDS,
        env={**os.environ, **env},
        check=False,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{server.log()}"
    return path / "certificates" / f"{name}.crt"


def verify(server: LiveServer, bundle: Path) -> None:
    issuer = bundle.with_suffix(".issuer.crt")
    result = subprocess.run(
        ["openssl", "verify", "-CAfile", str(server.root_pem), "-untrusted", str(issuer),
         str(bundle)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert f"{bundle}: OK" in result.stdout, result.stdout + result.stderr


def test_lego_over_http01(lego_server: LiveServer, http01_port: int, tmp_path: Path) -> None:
    challenge = ["--http", "--http.port", f"127.0.0.1:{http01_port}"]
    verify(lego_server, lego(lego_server, tmp_path / "lego", f"http.{ZONE}", challenge, {}))


def test_lego_over_tlsalpn01(lego_server: LiveServer, tlsalpn01_port: int, tmp_path: Path) -> None:
    challenge = ["--tls", "--tls.port", f"127.0.0.1:{tlsalpn01_port}"]
    verify(lego_server, lego(lego_server, tmp_path / "lego", f"tls.{ZONE}", challenge, {}))


def test_lego_over_dns01(lego_server: LiveServer, lego_dns: FakeDNS, tmp_path: Path) -> None:
    assert lego_dns.txt_dir is not None
    script = tmp_path / "present.sh"
    script.write_text(EXEC_SCRIPT.format(dir=lego_dns.txt_dir))
    script.chmod(0o755)
    challenge = ["--dns", "exec", "--dns.resolvers", lego_dns.resolver, "--dns.disable-cp"]
    env = {"EXEC_PATH": str(script), "EXEC_POLLING_INTERVAL": "1", "EXEC_PROPAGATION_TIMEOUT": "20"}
    verify(lego_server, lego(lego_server, tmp_path / "lego", f"dns.{ZONE}", challenge, env))
