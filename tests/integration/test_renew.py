"""Renewal over real sockets: `curl --cert` and `mintca renew` (in place, `--reuse-key`,
`--out`, `--daemon --once --exec`) against a real `mintca serve`. The successor keeps names and
profile with a new serial; the predecessor stays valid until revoked; revoked, held, expired
and foreign certificates get 403 or no TLS session at all."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.integration.live import LiveServer
from tests.integration.test_mtls import (
    ClientBundle,
    curl,
    enroll_client,
    foreign_client,
    issued_at,
    split_curl_output,
)

pytestmark = pytest.mark.integration


def renewal_body(path: Path, certificate: x509.Certificate | None = None) -> Path:
    """A JSON body with a CSR for a fresh key (the certificate's subject, no SAN)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = certificate.subject if certificate is not None else x509.Name([])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    path.write_text(json.dumps({"csr": csr.public_bytes(Encoding.PEM).decode()}))
    return path


def curl_renew(server: LiveServer, bundle: ClientBundle, body: Path) -> tuple[str, str]:
    result = curl(
        server,
        "/v1/renew",
        "--cert",
        str(bundle.cert),
        "--key",
        str(bundle.key),
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        f"@{body}",
    )
    return split_curl_output(result.stdout)


def mintca_renew(
    server: LiveServer, bundle: ClientBundle, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "renew",
            "--url",
            server.mtls_url,
            "--cert",
            str(bundle.cert),
            "--key",
            str(bundle.key),
            *args,
        ],
        env={**os.environ, "MINTCA_DATA_DIR": str(server.data_dir)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def leaf(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificates(path.read_bytes())[0]


def names(certificate: x509.Certificate) -> tuple[x509.Name, list[x509.GeneralName]]:
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return certificate.subject, list(san)


def spki_of_key(path: Path) -> bytes:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    return key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def spki(certificate: x509.Certificate) -> bytes:
    return certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def status(server: LiveServer, serial: str) -> str:
    with server.public_client() as client:
        return str(client.get(f"/v1/certificates/{serial}/status").json()["status"])


def audit_entry(server: LiveServer, serial: str) -> dict[str, object]:
    with server.admin_client() as admin:
        entries = admin.get("/admin/audit", params={"limit": 50}).json()["items"]
    (entry,) = [e for e in entries if e["target"] == serial]
    return dict(entry)


@pytest.mark.slow
def test_renewal_with_curl(live_server: LiveServer, tmp_path: Path) -> None:
    old = enroll_client(live_server, tmp_path / "old", profile="client", name="svc.internal")
    old_cert = leaf(old.cert)

    body, code = curl_renew(live_server, old, renewal_body(tmp_path / "body.json", old_cert))

    assert code == "201", body
    issued = json.loads(body)
    new_cert = x509.load_pem_x509_certificate(issued["certificate"].encode())
    assert issued["serial"] != old.serial
    assert issued["profile"] == "client"
    assert names(new_cert) == names(old_cert)
    issuing = x509.load_pem_x509_certificate(issued["chain"][0].encode())
    new_cert.verify_directly_issued_by(issuing)
    entry = audit_entry(live_server, issued["serial"])
    assert entry["action"] == "certificate.renew", entry
    assert entry["details"]["renews"] == old.serial, entry  # type: ignore[index]
    assert old.serial in str(entry["actor"]), entry
    # The predecessor stays valid (and usable on the listener) until it is revoked.
    assert status(live_server, old.serial) == "good"
    again, again_code = curl_renew(live_server, old, renewal_body(tmp_path / "b2.json"))
    assert again_code == "201", again


@pytest.mark.slow
def test_renewal_with_mintca_renew(live_server: LiveServer, tmp_path: Path) -> None:
    bundle = enroll_client(live_server, tmp_path / "svc", profile="peer", name="mesh.internal")
    first = leaf(bundle.cert)

    in_place = mintca_renew(live_server, bundle)
    second = leaf(bundle.cert)
    reused = mintca_renew(live_server, bundle, "--reuse-key")
    third = leaf(bundle.cert)
    to_dir = mintca_renew(live_server, bundle, "--out", str(tmp_path / "out"))

    for result in (in_place, reused, to_dir):
        assert result.returncode == 0, result
    assert f"serial     {format(second.serial_number, 'x')}" in in_place.stdout, in_place.stdout
    assert "profile    peer" in in_place.stdout
    assert len({first.serial_number, second.serial_number, third.serial_number}) == 3
    assert names(first) == names(second) == names(third)
    assert spki(second) != spki(first), "a new key by default"
    assert spki(third) == spki(second), "--reuse-key keeps it"
    assert spki_of_key(bundle.key) == spki(third)
    assert stat.S_IMODE(bundle.key.stat().st_mode) == 0o600
    assert x509.load_pem_x509_certificates(bundle.cert.read_bytes())[1].subject != third.subject
    out = tmp_path / "out"
    fourth = leaf(out / "cert.pem")
    assert stat.S_IMODE((out / "key.pem").stat().st_mode) == 0o600
    assert spki_of_key(out / "key.pem") == spki(fourth) != spki(third)
    assert (out / "chain.pem").read_text().count("BEGIN CERTIFICATE") == 2
    assert names(fourth) == names(first)
    assert not list(tmp_path.glob("**/.*.tmp")), "temporary files left behind"
    for certificate in (first, second, third):
        assert status(live_server, format(certificate.serial_number, "x")) == "good"


def held(server: LiveServer, directory: Path, reason: str) -> ClientBundle:
    bundle = enroll_client(server, directory, profile="client", name="held.internal")
    with server.admin_client() as admin:
        answer = admin.post(f"/admin/certificates/{bundle.serial}/revoke", json={"reason": reason})
    assert answer.status_code == 200, answer.text
    return bundle


@pytest.mark.slow
def test_renewal_is_refused_for_unusable_certificates(
    live_server: LiveServer, tmp_path: Path
) -> None:
    cases = {
        "revoked": (held(live_server, tmp_path / "revoked", "keyCompromise"), "403"),
        "on hold": (held(live_server, tmp_path / "held", "certificateHold"), "403"),
        "expired": (
            issued_at(
                live_server,
                tmp_path / "expired",
                datetime.now(UTC) - timedelta(days=3),
                profile="client",
                days=1,
            ),
            "000",
        ),
        "foreign": (foreign_client(tmp_path / "foreign"), "000"),
    }
    with live_server.admin_client() as admin:
        before = len(admin.get("/admin/certificates", params={"limit": 1000}).json()["items"])

    for case, (bundle, expected) in cases.items():
        body, code = curl_renew(live_server, bundle, renewal_body(tmp_path / f"{case}.json"))
        result = mintca_renew(live_server, bundle)
        assert code == expected, f"{case}: {code} {body}"
        if expected == "403":
            assert json.loads(body)["status"] == 403, body
            assert "HTTP 403" in result.stderr, result.stderr
        assert result.returncode == 1, f"{case}: {result}"
        assert "Traceback" not in result.stderr, result.stderr

    with live_server.admin_client() as admin:
        after = len(admin.get("/admin/certificates", params={"limit": 1000}).json()["items"])
    assert after == before, "a refused renewal issued something"


def test_a_csr_that_adds_a_name_is_refused(live_server: LiveServer, tmp_path: Path) -> None:
    bundle = enroll_client(live_server, tmp_path, profile="client", name="svc.internal")
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(leaf(bundle.cert).subject)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("evil.internal")]), False)
        .sign(key, hashes.SHA256())
    )
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"csr": csr.public_bytes(Encoding.PEM).decode()}))

    answer, code = curl_renew(live_server, bundle, body)

    assert code == "403", answer
    assert json.loads(answer)["type"].endswith("name-not-allowed"), answer


@pytest.mark.slow
def test_daemon_renews_when_due_and_runs_exec(live_server: LiveServer, tmp_path: Path) -> None:
    # Issued 20 hours ago for a day: two thirds of its life (16 h ± 1.2 h) are behind it.
    bundle = issued_at(
        live_server,
        tmp_path / "svc",
        datetime.now(UTC) - timedelta(hours=20),
        profile="client",
        days=1,
    )
    old = leaf(bundle.cert)
    marker = tmp_path / "reloaded"

    result = mintca_renew(live_server, bundle, "--daemon", "--once", "--exec", f"touch {marker}")

    assert result.returncode == 0, result
    assert marker.exists(), result
    new = leaf(bundle.cert)
    assert new.serial_number != old.serial_number
    assert names(new)[0] == names(old)[0]
    assert new.not_valid_after_utc > old.not_valid_after_utc
    assert "next renewal due" in result.stderr, result.stderr


def test_a_server_profile_certificate_cannot_reach_the_listener(
    live_server: LiveServer, tmp_path: Path
) -> None:
    """OpenSSL checks a client certificate's EKU: `server` certificates (serverAuth only) never
    pass the mtls handshake, so they renew by enrollment with a token (README: renewal)."""
    bundle = enroll_client(live_server, tmp_path, profile="server", name="api.internal")

    body, code = curl_renew(live_server, bundle, renewal_body(tmp_path / "body.json"))

    assert code == "000", body
