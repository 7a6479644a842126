"""cert-manager's ACME issuer, as far as it can be run here: cert-manager needs a Kubernetes
cluster and is not packaged for Debian, PyPI or npm, so no cert-manager runs. What it depends
on is tested instead: `mintca acme eab create --format cert-manager` prints a Secret and an
Issuer (their fields are checked against the CRD in tests/cli/test_acme_manifest.py), and an
ACME client (lego, the Debian package) enrolls using ONLY that manifest's values: the
directory `spec.acme.server` over HTTPS trusted through `caBundle` alone, EAB with `keyID` and
the key the Secret holds; `openssl verify` accepts the certificate with `caBundle` as the
only trust anchor."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.config import Settings
from tests.integration.acme_https import ZONE, HttpsAcme, openssl_verify, running_https_acme

CLIENT_SECONDS = 120
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("lego") is None, reason="lego is not installed (apt lego)"),
]
UNPADDED_BASE64URL = re.compile(r"^[A-Za-z0-9_-]+$")


@pytest.fixture
def acme(initialised_settings: Settings, tmp_path: Path) -> Iterator[HttpsAcme]:
    with running_https_acme(initialised_settings, tmp_path) as running:
        yield running


def cert_manager_manifest(acme: HttpsAcme) -> tuple[dict[str, Any], dict[str, Any]]:
    """The real CLI, as an operator on the CA host runs it: the directory URL comes from
    MINTCA_PUBLIC_URL, the caBundle from the file the CLI trusts for the mtls listener."""
    server = acme.server
    env = {**os.environ, "MINTCA_PUBLIC_URL": server.public_url, "MINTCA_PUBLIC_TLS": "true"}
    result = subprocess.run(
        [
            sys.executable, "-m", "app.cli", "acme", "eab", "create", "--name", f"*.{ZONE}",
            "--format", "cert-manager", "--email", f"ops@{ZONE}",
            "--url", server.mtls_url, "--data-dir", str(server.data_dir),
        ],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{server.log()}"
    secret, issuer = [d for d in yaml.safe_load_all(result.stdout) if d is not None]
    assert (secret["kind"], issuer["kind"]) == ("Secret", "Issuer"), result.stdout
    return secret, issuer


def lego(
    values: dict[str, str], path: Path, name: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    args = [
        "lego", "--server", values["server"], "--accept-tos", "--email", values["email"],
        "--eab", "--kid", values["kid"], "--hmac", values["hmac"], "--key-type", "ec256",
        "--domains", name, "--path", str(path),
        "--http", "--http.port", f"127.0.0.1:{values['http01_port']}", "run",
    ]  # fmt: skip
    return subprocess.run(
        args, capture_output=True, text=True, timeout=CLIENT_SECONDS,
        env={**os.environ, **env}, check=False,
    )  # fmt: skip


def test_an_acme_client_enrolls_with_only_the_manifests_values(
    acme: HttpsAcme, tmp_path: Path
) -> None:
    secret, issuer = cert_manager_manifest(acme)
    spec = issuer["spec"]["acme"]
    eab = spec["externalAccountBinding"]
    assert eab["keySecretRef"]["name"] == secret["metadata"]["name"]
    hmac_key = base64.b64decode(secret["data"][eab["keySecretRef"]["key"]]).decode()
    assert UNPADDED_BASE64URL.match(hmac_key), f"cert-manager needs unpadded base64url: {hmac_key}"
    assert spec["server"] == acme.directory, spec["server"]
    ca_bundle = tmp_path / "ca-bundle.pem"
    ca_bundle.write_bytes(base64.b64decode(spec["caBundle"], validate=True))
    values = {
        "server": spec["server"], "email": spec["email"], "kid": eab["keyID"], "hmac": hmac_key,
        "http01_port": str(acme.http01_port),
    }  # fmt: skip
    name = f"cm.{ZONE}"

    # Without the caBundle the HTTPS directory is not trusted: the bundle is what makes it work.
    refused = lego(values, tmp_path / "untrusted", name, {})
    assert refused.returncode != 0, refused.stdout + refused.stderr
    assert "x509: certificate signed by unknown authority" in refused.stderr, refused.stderr

    done = lego(values, tmp_path / "lego", name, {"LEGO_CA_CERTIFICATES": str(ca_bundle)})
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{acme.server.log()}"
    certificates = tmp_path / "lego" / "certificates"
    bundle = certificates / f"{name}.crt"
    openssl_verify(ca_bundle, certificates / f"{name}.issuer.crt", bundle)
