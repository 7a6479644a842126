"""MINTCA_PUBLIC_TLS=true: the public listener speaks server-only TLS with the server
certificate; it asks no client certificate, and the mtls listener is unchanged."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from app.config import Settings
from tests.integration.live import start_server, stop_server

pytestmark = pytest.mark.integration


def test_public_listener_serves_tls_without_client_certificates(
    initialised_settings: Settings, tmp_path: Path
) -> None:
    process, server = start_server(
        initialised_settings, tmp_path / "serve.log", extra_env={"MINTCA_PUBLIC_TLS": "true"}
    )
    try:
        assert server.public_url.startswith("https://"), server.public_url
        curl = subprocess.run(
            ["curl", "-sS", "--cacert", str(server.root_pem), f"{server.public_url}/ca/root.pem"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert curl.returncode == 0, curl.stderr
        assert curl.stdout == server.root_pem.read_text(), curl.stdout
        # Plain HTTP on the TLS port gets no HTTP answer.
        plain = subprocess.run(
            ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
             server.public_url.replace("https://", "http://") + "/health"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert plain.stdout != "200", plain.stdout + plain.stderr
        with server.admin_client() as admin:
            assert admin.get("/admin/cas").status_code == 200
    finally:
        stop_server(process)
