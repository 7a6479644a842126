"""A live `mintca serve` whose public listener speaks TLS (MINTCA_PUBLIC_TLS=true), as
cert-manager and Traefik reach it, with the test DNS server answering its challenge lookups."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from app.config import Settings
from tests.acme.dns_server import running_dns
from tests.integration.live import LiveServer, free_port, start_server, stop_server
from tests.integration.test_acme_certbot import ZONE

__all__ = ["ZONE", "HttpsAcme", "openssl_verify", "running_https_acme"]


@dataclass(frozen=True)
class HttpsAcme:
    server: LiveServer
    http01_port: int
    tlsalpn01_port: int

    @property
    def directory(self) -> str:
        return f"{self.server.public_url}/acme/directory"


@contextmanager
def running_https_acme(settings: Settings, tmp_path: Path) -> Iterator[HttpsAcme]:
    http01_port, tlsalpn01_port = free_port(), free_port()
    with running_dns(ZONE) as dns:
        extra = {
            "MINTCA_PUBLIC_TLS": "true",
            "MINTCA_ACME_DNS_RESOLVER": dns.resolver,
            "MINTCA_ACME_HTTP01_PORT": str(http01_port),
            "MINTCA_ACME_TLSALPN01_PORT": str(tlsalpn01_port),
        }
        process, server = start_server(settings, tmp_path / "serve.log", extra_env=extra)
        try:
            assert server.public_url.startswith("https://"), server.public_url
            yield HttpsAcme(server, http01_port, tlsalpn01_port)
        finally:
            stop_server(process)


def openssl_verify(ca_file: Path, untrusted: Path, certificate: Path) -> None:
    """`openssl verify` accepts the leaf, chained through `untrusted` to `ca_file`."""
    result = subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca_file), "-untrusted", str(untrusted),
         str(certificate)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert f"{certificate}: OK" in result.stdout, result.stdout + result.stderr
