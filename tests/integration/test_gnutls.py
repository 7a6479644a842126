"""GnuTLS as a real client: gnutls-cli over the mtls listener, ocsptool against the OCSP
responder, certtool checking full and delta CRLs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.helpers import csr_pem, require_tools
from tests.integration.live import LiveServer

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _gnutls() -> None:
    require_tools("gnutls-cli", "ocsptool", "certtool", package="gnutls-bin")


REQUEST = b"GET /admin/cas HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, timeout=30, check=False)
    return (done.stdout + done.stderr).decode(errors="replace")


def gnutls_cli(server: LiveServer, output: Path, *credentials: str) -> str:
    """Send one request and keep stdin open: gnutls-cli hangs up when its input ends, so it
    must wait for the server to close the connection (Connection: close) instead."""
    with output.open("wb") as sink:
        process = subprocess.Popen(
            ["gnutls-cli", "--x509cafile", str(server.root_pem), *credentials,
             "-p", str(server.mtls_port), "localhost"],
            stdin=subprocess.PIPE, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
        assert process.stdin is not None
        try:
            process.stdin.write(REQUEST)
            process.stdin.flush()
        except BrokenPipeError:
            pass  # the handshake already failed
        try:
            process.wait(timeout=20)
        finally:
            process.kill()
            process.wait()
            process.stdin.close()
    return output.read_text(errors="replace")


def test_gnutls_cli_needs_a_client_certificate(live_server: LiveServer, tmp_path: Path) -> None:
    data = live_server.data_dir
    with_admin = gnutls_cli(
        live_server,
        tmp_path / "with-admin.txt",
        "--x509certfile", str(data / "admin.pem"), "--x509keyfile", str(data / "admin-key.pem"),
    )  # fmt: skip
    assert "HTTP/1.1 200 OK" in with_admin, with_admin
    assert '"kind":"issuing"' in with_admin, with_admin
    without = gnutls_cli(live_server, tmp_path / "without.txt")
    assert "HTTP/1.1" not in without, without


@pytest.fixture
def leaf(live_server: LiveServer, tmp_path: Path) -> tuple[str, Path, Path]:
    """An enrolled certificate: its serial, cert.pem and its issuer's issuer.pem."""
    with live_server.admin_client() as admin:
        token = admin.post("/admin/tokens", json={"names": ["gnutls.internal"]}).json()["token"]
    with live_server.public_client() as public:
        answer = public.post(
            "/v1/certificates",
            json={"csr": csr_pem("gnutls.internal")},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    (tmp_path / "cert.pem").write_text(body["certificate"])
    (tmp_path / "issuer.pem").write_text(body["chain"][0])
    return body["serial"], tmp_path / "cert.pem", tmp_path / "issuer.pem"


def ocsptool(cert: Path, issuer: Path, *extra: str) -> str:
    # --ask takes the responder URL from the certificate's AIA; --load-signer makes GnuTLS
    # accept the issuer itself or a responder the issuer delegated to (RFC 6960 §4.2.2.2).
    return run(
        "ocsptool", "--ask", "--load-cert", str(cert), "--load-issuer", str(issuer),
        "--load-signer", str(issuer), *extra,
    )  # fmt: skip


def test_ocsptool_sees_good_then_revoked(
    live_server: LiveServer, leaf: tuple[str, Path, Path]
) -> None:
    serial, cert, issuer = leaf
    for extra in ((), ("--nonce",)):
        answer = ocsptool(cert, issuer, *extra)
        assert "Verifying OCSP Response: Success" in answer, answer
        assert "Certificate Status: good" in answer, answer
    with live_server.admin_client() as admin:
        revoked = admin.post(
            f"/admin/certificates/{serial}/revoke", json={"reason": "keyCompromise"}
        )
    assert revoked.status_code == 200, revoked.text
    for extra in ((), ("--nonce",)):
        answer = ocsptool(cert, issuer, *extra)
        assert "Verifying OCSP Response: Success" in answer, answer
        assert "Certificate Status: revoked" in answer, answer


def test_certtool_verifies_full_and_delta_crls(
    live_server: LiveServer, leaf: tuple[str, Path, Path], tmp_path: Path
) -> None:
    serial, _cert, issuer = leaf
    with live_server.admin_client() as admin:
        admin.post(f"/admin/certificates/{serial}/revoke", json={"reason": "superseded"})
    ca_id = (
        x509.load_pem_x509_certificate(issuer.read_bytes())
        .extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        .value.digest.hex()
    )
    with live_server.public_client() as public:
        crls = {
            "full": public.get(f"/crl/{ca_id}.crl").content,
            "delta": public.get(f"/crl/{ca_id}-delta.crl").content,
        }
    for kind, der in crls.items():
        path = tmp_path / f"{kind}.pem"
        path.write_bytes(x509.load_der_x509_crl(der).public_bytes(Encoding.PEM))
        verified = run(
            "certtool", "--verify-crl", "--load-ca-certificate", str(issuer), "--infile", str(path)
        )
        assert "Verification output: Verified." in verified, f"{kind}: {verified}"
        info = run("certtool", "--crl-info", "--infile", str(path))
        assert serial.upper() in info.upper().replace(":", ""), f"{kind}: {info}"
        # A CRL checked against the wrong CA must not verify.
        wrong = run(
            "certtool", "--verify-crl", "--load-ca-certificate", str(live_server.root_pem),
            "--infile", str(path),
        )  # fmt: skip
        assert "Not verified" in wrong, f"{kind}: {wrong}"
