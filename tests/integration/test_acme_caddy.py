"""Caddy (the Debian package) gets a certificate for a site from a live `mintca serve` with
EAB, as `acme_ca` with `acme_eab` in its Caddyfile; `openssl verify` accepts it."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.config import Settings
from tests.acme.dns_server import FakeDNS, running_dns
from tests.integration.live import LiveServer, free_port, start_server, stop_server
from tests.integration.test_acme_certbot import ZONE, eab_credential

WAIT_SECONDS = 90
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("caddy") is None, reason="caddy is not installed (apt caddy)"),
]
CADDYFILE = """{{
    admin off
    default_bind 127.0.0.1
    http_port {http_port}
    https_port {https_port}
    storage file_system {storage}
    skip_install_trust
    acme_ca {directory}
    acme_eab {{
        key_id {kid}
        mac_key {hmac_key}
    }}
    email ops@{zone}
}}
{name} {{
    respond "hello"
}}
"""


@pytest.fixture
def ports() -> tuple[int, int]:
    return free_port(), free_port()


@pytest.fixture
def caddy_server(
    initialised_settings: Settings, tmp_path: Path, ports: tuple[int, int]
) -> Iterator[LiveServer]:
    with running_dns(ZONE) as dns:
        yield from _serve(initialised_settings, tmp_path, ports, dns)


def _serve(
    settings: Settings, tmp_path: Path, ports: tuple[int, int], dns: FakeDNS
) -> Iterator[LiveServer]:
    extra = {
        "MINTCA_ACME_DNS_RESOLVER": dns.resolver,
        "MINTCA_ACME_HTTP01_PORT": str(ports[0]),
        "MINTCA_ACME_TLSALPN01_PORT": str(ports[1]),
    }
    process, server = start_server(settings, tmp_path / "serve.log", extra_env=extra)
    try:
        yield server
    finally:
        stop_server(process)


def test_caddy_obtains_a_certificate(
    caddy_server: LiveServer, ports: tuple[int, int], tmp_path: Path
) -> None:
    kid, hmac_key = eab_credential(caddy_server)
    name, storage = f"caddy.{ZONE}", tmp_path / "caddy-data"
    config = tmp_path / "Caddyfile"
    config.write_text(
        CADDYFILE.format(
            http_port=ports[0],
            https_port=ports[1],
            storage=storage,
            directory=f"{caddy_server.public_url}/acme/directory",
            kid=kid,
            hmac_key=hmac_key,
            zone=ZONE,
            name=name,
        )
    )
    env = {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "xdg")}
    log = tmp_path / "caddy.log"
    with log.open("wb") as out:
        caddy = subprocess.Popen(
            ["caddy", "run", "--config", str(config), "--adapter", "caddyfile"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while not (found := list(storage.glob(f"certificates/*/{name}/{name}.crt"))):
            assert caddy.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text() + caddy_server.log()
            time.sleep(0.5)
    finally:
        caddy.terminate()
        caddy.wait(timeout=15)
    bundle = found[0]
    verified = subprocess.run(
        ["openssl", "verify", "-CAfile", str(caddy_server.root_pem), "-untrusted", str(bundle),
         str(bundle)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert f"{bundle}: OK" in verified.stdout, verified.stdout + verified.stderr
