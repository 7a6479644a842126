"""MINTCA_PUBLIC_TLS=true: the public listener speaks server-only TLS with the server
certificate; it asks no client certificate, and the mtls listener is unchanged."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from app.config import Settings
from tests.helpers import csr_pem
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


def test_enrollment_over_tls_the_route_then_the_protocol_path(
    initialised_settings: Settings, tmp_path: Path
) -> None:
    """On one TLS connection, the first enrollment with a token goes to the route (which
    caches its grant in the worker) and the next is answered by the HTTP protocol's fast
    path: both are 201 with the same headers and a certificate for the name asked."""
    process, server = start_server(
        initialised_settings,
        tmp_path / "serve.log",
        extra_env={"MINTCA_PUBLIC_TLS": "true", "MINTCA_WORKERS": "1"},
    )
    try:
        with server.admin_client() as admin:
            made = admin.post(
                "/admin/tokens",
                json={"names": ["*.tls.internal"], "profile": "server", "max_uses": 2},
            )
        assert made.status_code == 201, made.text
        bearer = {"Authorization": f"Bearer {made.json()['token']}"}
        answers = []
        trust = ssl.create_default_context(cafile=str(server.root_pem))
        with httpx.Client(base_url=server.public_url, verify=trust) as client:
            for name in ("one.tls.internal", "two.tls.internal"):
                answer = client.post(
                    "/v1/certificates", json={"csr": csr_pem(name)}, headers=bearer
                )
                assert answer.status_code == 201, answer.text
                certificate = x509.load_pem_x509_certificate(answer.json()["certificate"].encode())
                san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
                assert san.value.get_values_for_type(x509.DNSName) == [name]
                answers.append(answer)
        route, fast = answers
        assert [k for k, _ in route.headers.multi_items() if k != "date"] == [
            k for k, _ in fast.headers.multi_items() if k != "date"
        ]
        assert route.headers["content-type"] == fast.headers["content-type"] == "application/json"
    finally:
        stop_server(process)
