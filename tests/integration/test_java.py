"""Java's PKIX validator as a relying party: OCSP and CRL revocation checking of the whole
chain (leaf by the issuing CA, issuing CA by the root), as Java TLS stacks do it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.config import Settings
from tests.helpers import csr_pem, require_tools
from tests.integration.live import LiveServer, start_server, stop_server

CHECKER = Path(__file__).with_name("java") / "RevocationCheck.java"
pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _java() -> None:
    require_tools("java", package="default-jre-headless")


def java_check(method: str, server: LiveServer, chain: Path) -> str:
    done = subprocess.run(
        ["java", str(CHECKER), method, str(server.root_pem), str(chain)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return (done.stdout + done.stderr).strip()


@pytest.fixture
def fresh_server(database_url: str, kek: str, tmp_path: Path) -> Iterator[LiveServer]:
    """A server initialised by `serve` itself, so even the issuing CA's AIA and CRL
    distribution point carry the live URL (Java checks the issuing CA against its root)."""
    settings = Settings(
        data_dir=tmp_path / "data", database_url=database_url, kek=kek, _env_file=None
    )
    process, server = start_server(settings, tmp_path / "serve.log")
    try:
        yield server
    finally:
        stop_server(process)


def test_java_accepts_ocsp_and_crls_before_and_after_revocation(
    fresh_server: LiveServer, tmp_path: Path
) -> None:
    live_server = fresh_server
    with live_server.admin_client() as admin:
        token = admin.post("/admin/tokens", json={"names": ["java.internal"]}).json()["token"]
    with live_server.public_client() as public:
        answer = public.post(
            "/v1/certificates",
            json={"csr": csr_pem("java.internal")},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    chain = tmp_path / "chain.pem"
    chain.write_text(body["certificate"] + body["chain"][0])  # leaf, issuing CA

    for method in ("ocsp", "crl"):
        result = java_check(method, live_server, chain)
        assert result == "VALID", f"{method}: {result}"

    with live_server.admin_client() as admin:
        revoked = admin.post(
            f"/admin/certificates/{body['serial']}/revoke", json={"reason": "keyCompromise"}
        )
    assert revoked.status_code == 200, revoked.text
    for method in ("ocsp", "crl"):
        result = java_check(method, live_server, chain)
        assert result.startswith("REVOKED"), f"{method}: {result}"
        assert "KEY_COMPROMISE" in result, f"{method}: {result}"
