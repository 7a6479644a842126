"""The mtls listener over real sockets and real TLS, with real clients (httpx, curl, openssl
s_client, Python's ssl): who fails the handshake, who gets 403, and that the peer certificate
reaches the application through the ASGI scope, even on a resumed TLS session."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from app.clock import FixedClock
from app.services.container import Services
from tests.helpers import foreign_ca, make_csr
from tests.integration.live import LiveServer

pytestmark = pytest.mark.integration

PROCESS_TIMEOUT = 30
PROBLEM_JSON = "application/problem+json"


# --- Helpers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientBundle:
    cert: Path  # leaf PEM
    key: Path  # private key PEM
    serial: str  # lowercase hex, as the API writes it
    subject: str  # RFC 4514


def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    path.chmod(0o600)
    return path


def enroll_client(server: LiveServer, directory: Path, *, profile: str, name: str) -> ClientBundle:
    """A token for `profile` from the admin API, then an enrollment on the public listener."""
    with server.admin_client() as admin:
        created = admin.post("/admin/tokens", json={"profile": profile, "names": [name]})
    assert created.status_code == 201, created.text
    key, csr = make_csr(name)
    with server.public_client() as public:
        issued = public.post(
            "/v1/certificates",
            json={"csr": csr.public_bytes(Encoding.PEM).decode(), "profile": profile},
            headers={"Authorization": f"Bearer {created.json()['token']}"},
        )
    assert issued.status_code == 201, issued.text
    body = issued.json()
    assert body["profile"] == profile, body
    directory.mkdir(parents=True, exist_ok=True)
    cert = directory / "cert.pem"
    cert.write_text(body["certificate"])
    certificate = x509.load_pem_x509_certificate(body["certificate"].encode())
    return ClientBundle(
        cert,
        write_key(key, directory / "key.pem"),
        body["serial"],
        certificate.subject.rfc4514_string(),
    )


def foreign_client(directory: Path) -> ClientBundle:
    """A throwaway CA that MintCA has never seen, and a clientAuth leaf it issued."""
    now = datetime.now(UTC)
    ca_key, ca = foreign_ca("Foreign Test CA")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "admin")])
    leaf = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert = directory / "foreign.pem"
    cert.write_bytes(leaf.public_bytes(Encoding.PEM) + ca.public_bytes(Encoding.PEM))
    return ClientBundle(
        cert,
        write_key(key, directory / "foreign-key.pem"),
        format(leaf.serial_number, "x"),
        subject.rfc4514_string(),
    )


def curl(server: LiveServer, path: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """curl against the mtls listener, trusting root.pem; stdout ends with the HTTP status
    (`000` when no HTTP response came)."""
    return subprocess.run(
        [
            "curl",
            "--silent",
            "--show-error",
            "--max-time",
            "20",
            "--resolve",
            f"localhost:{server.mtls_port}:127.0.0.1",
            "--cacert",
            str(server.root_pem),
            "--write-out",
            "\n%{http_code}",
            *extra,
            f"{server.mtls_url}{path}",
        ],
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        check=False,
    )


def split_curl_output(output: str) -> tuple[str, str]:
    """(body, http_code) from curl's stdout with `--write-out '\\n%{http_code}'`."""
    body, _, code = output.rpartition("\n")
    return body, code


def s_client(server: LiveServer, cert: Path, key: Path) -> subprocess.CompletedProcess[str]:
    """`openssl s_client` with a client certificate, sending one GET /admin/cas; it fails on
    its own side only if the server's certificate does not verify against root.pem."""
    request = (
        f"GET /admin/cas HTTP/1.1\r\nHost: localhost:{server.mtls_port}\r\n"
        "Connection: close\r\n\r\n"
    )
    return subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{server.mtls_port}",
            "-servername",
            "localhost",
            "-CAfile",
            str(server.root_pem),
            "-verify_return_error",
            "-cert",
            str(cert),
            "-key",
            str(key),
            "-ign_eof",
        ],
        input=request,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        check=False,
    )


@dataclass(frozen=True)
class RawAnswer:
    status: int
    content_type: str
    body: bytes
    session: ssl.SSLSession | None
    session_reused: bool


def raw_get(
    server: LiveServer,
    context: ssl.SSLContext,
    path: str,
    *,
    session: ssl.SSLSession | None = None,
) -> RawAnswer:
    """One HTTP/1.1 request on a fresh TLS connection made with Python's ssl, offering
    `session` for resumption. The session is taken after the response is read: TLS 1.3
    session tickets arrive after the handshake."""
    with (
        socket.create_connection(("127.0.0.1", server.mtls_port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost", session=session) as tls,
    ):
        request = f"GET {path} HTTP/1.1\r\nHost: localhost:{server.mtls_port}\r\n\r\n"
        tls.sendall(request.encode())
        response = http.client.HTTPResponse(tls)
        try:
            response.begin()
            body = response.read()
        finally:
            response.close()
        return RawAnswer(
            response.status,
            response.getheader("content-type", ""),
            body,
            tls.session,
            tls.session_reused,
        )


def assert_problem(answer: httpx.Response | RawAnswer, status: int) -> dict[str, object]:
    if isinstance(answer, httpx.Response):
        code, content_type, body = (
            answer.status_code,
            answer.headers["content-type"],
            answer.content,
        )
    else:
        code, content_type, body = answer.status, answer.content_type, answer.body
    assert code == status, body
    assert content_type == PROBLEM_JSON, body
    problem = json.loads(body)
    assert problem["status"] == status, problem
    assert {"type", "title", "detail"} <= problem.keys(), problem
    return problem  # type: ignore[no-any-return]


# --- Handshake refusals ------------------------------------------------------------------------


def test_no_client_certificate_gets_no_http_response(live_server: LiveServer) -> None:
    # With TLS 1.3 the client may finish its handshake before the server refuses it: the
    # refusal shows as a connect or read error. What matters is that no HTTP answer comes.
    with (
        httpx.Client(
            base_url=live_server.mtls_url, verify=live_server.ssl_context(), timeout=10
        ) as client,
        pytest.raises(httpx.TransportError),
    ):
        client.get("/admin/cas")

    result = curl(live_server, "/admin/cas")

    body, code = split_curl_output(result.stdout)
    assert result.returncode != 0, result
    assert code == "000", result
    assert body == "", result


def test_foreign_ca_certificate_fails_the_handshake(
    live_server: LiveServer, tmp_path: Path
) -> None:
    foreign = foreign_client(tmp_path)
    data_dir = live_server.data_dir

    refused = s_client(live_server, foreign.cert, foreign.key)
    accepted = s_client(live_server, data_dir / "admin.pem", data_dir / "admin-key.pem")
    result = curl(live_server, "/admin/cas", "--cert", str(foreign.cert), "--key", str(foreign.key))

    # The same s_client command gets an answer with MintCA's admin bundle (the control), and
    # none with the foreign certificate: the server verified the client side and hung up.
    assert "HTTP/1.1 200 OK" in accepted.stdout, accepted
    assert "Verify return code: 0 (ok)" in refused.stdout, refused
    assert refused.returncode != 0, refused
    assert "HTTP/1.1" not in refused.stdout, refused.stdout
    body, code = split_curl_output(result.stdout)
    assert result.returncode != 0, result
    assert (body, code) == ("", "000"), result
    with (
        live_server.mtls_client(foreign.cert, foreign.key) as client,
        pytest.raises(httpx.TransportError),
    ):
        client.get("/admin/cas")


# --- Authorisation after a successful handshake -------------------------------------------------


def test_admin_bundle_lists_cas_with_curl_and_httpx(live_server: LiveServer) -> None:
    data_dir = live_server.data_dir

    result = curl(
        live_server,
        "/admin/cas",
        "--cert",
        str(data_dir / "admin.pem"),
        "--key",
        str(data_dir / "admin-key.pem"),
    )
    with live_server.admin_client() as admin:
        answer = admin.get("/admin/cas")

    body, code = split_curl_output(result.stdout)
    assert (result.returncode, code) == (0, "200"), result
    cas = json.loads(body)
    assert sorted(ca["kind"] for ca in cas) == ["issuing", "root"], cas
    assert [ca["active"] for ca in cas if ca["kind"] == "issuing"] == [True], cas
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json", answer.headers
    assert answer.json() == cas


def test_client_profile_certificate_is_forbidden_on_admin_routes(
    live_server: LiveServer, tmp_path: Path
) -> None:
    client_bundle = enroll_client(live_server, tmp_path, profile="client", name="svc.internal")

    with live_server.mtls_client(client_bundle.cert, client_bundle.key) as client:
        answer = client.get("/admin/cas")
    result = curl(
        live_server,
        "/admin/cas",
        "--cert",
        str(client_bundle.cert),
        "--key",
        str(client_bundle.key),
    )

    assert_problem(answer, 403)
    body, code = split_curl_output(result.stdout)
    assert code == "403", result
    assert json.loads(body)["status"] == 403, body


def test_revoked_certificate_is_refused_on_new_and_resumed_sessions(
    live_server: LiveServer, tmp_path: Path
) -> None:
    ops = enroll_client(live_server, tmp_path, profile="admin", name="ops.internal")
    context = live_server.ssl_context(ops.cert, ops.key)
    before = raw_get(live_server, context, "/admin/cas")
    assert before.status == 200, before.body
    assert before.session is not None, "the server sent no session ticket"
    # The saved session really resumes while the certificate is still good.
    resumed_before = raw_get(live_server, context, "/admin/cas", session=before.session)
    assert resumed_before.session_reused, "the server did not resume the TLS session"
    assert resumed_before.status == 200, resumed_before.body

    with live_server.admin_client() as admin:
        revoked = admin.post(
            f"/admin/certificates/{ops.serial}/revoke", json={"reason": "keyCompromise"}
        )
    assert revoked.status_code == 200, revoked.text
    fresh = raw_get(live_server, context, "/admin/cas")
    resumed = raw_get(live_server, context, "/admin/cas", session=before.session)
    with live_server.mtls_client(ops.cert, ops.key) as client:
        httpx_answer = client.get("/admin/cas")

    assert not fresh.session_reused
    assert_problem(fresh, 403)
    assert resumed.session_reused, "the TLS session was not resumed"
    problem = assert_problem(resumed, 403)
    assert "revoked" in str(problem["detail"]), problem
    assert_problem(httpx_answer, 403)


def test_peer_certificate_names_the_audit_actor(live_server: LiveServer, tmp_path: Path) -> None:
    # Two admin certificates act in turn, each on its own connection: the audit log names
    # each one's own serial, so the application sees the certificate of the connection.
    ops = enroll_client(live_server, tmp_path, profile="admin", name="ops.internal")
    bootstrap_admin = x509.load_pem_x509_certificate(
        (live_server.data_dir / "admin.pem").read_bytes()
    )
    token_request = {"profile": "server", "names": ["*.audit.internal"]}

    with live_server.mtls_client(ops.cert, ops.key) as client:
        by_ops = client.post("/admin/tokens", json=token_request)
    with live_server.admin_client() as admin:
        by_bootstrap = admin.post("/admin/tokens", json=token_request)
        audit = admin.get("/admin/audit", params={"limit": 10})

    assert by_ops.status_code == 201, by_ops.text
    assert by_bootstrap.status_code == 201, by_bootstrap.text
    assert audit.status_code == 200, audit.text
    entries = {e["target"]: e for e in audit.json()["items"] if e["action"] == "token.create"}
    ops_actor = entries[by_ops.json()["id"]]["actor"]
    bootstrap_actor = entries[by_bootstrap.json()["id"]]["actor"]
    assert ops.serial in ops_actor, audit.json()
    assert ops.subject in ops_actor, audit.json()
    assert format(bootstrap_admin.serial_number, "x") in bootstrap_actor, audit.json()
    assert ops.serial not in bootstrap_actor, audit.json()


# --- The matrix: every way in that must fail, next to the ways that must work --------------------


def services_at(server: LiveServer, moment: datetime) -> Services:
    """The live server's CA and database, with the clock at `moment` (to issue certificates
    that are already expired, or not yet valid, at the real time the server checks)."""
    return Services(server.settings, clock=FixedClock(moment.replace(microsecond=0)))


def issued_at(
    server: LiveServer, directory: Path, moment: datetime, *, profile: str, days: int
) -> ClientBundle:
    """A certificate MintCA issued with its clock at `moment`, valid for `days`."""
    services = services_at(server, moment)
    try:
        token = services.tokens.create(
            actor="test",
            profiles=[profile],
            names=["timeshifted"],
            ttl=timedelta(hours=1),
            max_uses=1,
            max_validity_days=None,
        )
        key, _csr = make_csr("unused")
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "timeshifted")]))
            .sign(key, hashes.SHA256())
        )
        issued = services.enrollment.enroll(
            token=token.token, csr_data=csr.public_bytes(Encoding.PEM), validity_days=days
        )
    finally:
        services.close()
    directory.mkdir(parents=True, exist_ok=True)
    cert = directory / "cert.pem"
    cert.write_bytes(issued.certificate.public_bytes(Encoding.PEM))
    return ClientBundle(
        cert,
        write_key(key, directory / "key.pem"),
        issued.serial,
        issued.certificate.subject.rfc4514_string(),
    )


def impostor(server: LiveServer, directory: Path, *, copy_issuer_name: bool) -> ClientBundle:
    """A foreign CA's leaf with the admin certificate's subject, serial, SAN and EKU; with
    `copy_issuer_name`, the foreign CA also carries MintCA's issuing CA's name, so a verifier
    that built chains by name alone would pick MintCA's CA (and the signature must fail)."""
    admin, issuing = x509.load_pem_x509_certificates((server.data_dir / "admin.pem").read_bytes())
    ca_key, ca = foreign_ca("Foreign Test CA")
    ca_name = issuing.subject if copy_issuer_name else ca.subject
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    san = admin.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    leaf = (
        x509.CertificateBuilder()
        .subject_name(admin.subject)
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(admin.serial_number)
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(san, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert = directory / "impostor.pem"
    cert.write_bytes(leaf.public_bytes(Encoding.PEM))
    return ClientBundle(
        cert,
        write_key(key, directory / "impostor-key.pem"),
        format(leaf.serial_number, "x"),
        leaf.subject.rfc4514_string(),
    )


def held(server: LiveServer, directory: Path, reason: str) -> ClientBundle:
    bundle = enroll_client(server, directory, profile="admin", name=f"{directory.name}.internal")
    with server.admin_client() as admin:
        answer = admin.post(f"/admin/certificates/{bundle.serial}/revoke", json={"reason": reason})
    assert answer.status_code == 200, answer.text
    return bundle


REFUSED = "refused"  # the TLS handshake failed (no HTTP answer) or the answer is 403
MATRIX_CASES: list[tuple[str, Callable[[LiveServer, Path], ClientBundle | None], str]] = [
    ("no certificate", lambda s, d: None, REFUSED),
    ("foreign CA", lambda s, d: foreign_client(d), REFUSED),
    (
        "foreign CA copying the admin's subject and serial",
        lambda s, d: impostor(s, d, copy_issuer_name=False),
        REFUSED,
    ),
    (
        "foreign CA named like MintCA's issuing CA, admin's subject and serial",
        lambda s, d: impostor(s, d, copy_issuer_name=True),
        REFUSED,
    ),
    (
        "expired",
        lambda s, d: issued_at(
            s, d, datetime.now(UTC) - timedelta(days=3), profile="admin", days=1
        ),
        REFUSED,
    ),
    (
        "not yet valid",
        lambda s, d: issued_at(
            s, d, datetime.now(UTC) + timedelta(days=2), profile="admin", days=5
        ),
        REFUSED,
    ),
    ("revoked", lambda s, d: held(s, d, "keyCompromise"), REFUSED),
    ("on hold", lambda s, d: held(s, d, "certificateHold"), REFUSED),
    ("client profile", lambda s, d: enroll_client(s, d, profile="client", name="c1"), REFUSED),
    ("peer profile", lambda s, d: enroll_client(s, d, profile="peer", name="p1.internal"), REFUSED),
    (
        "admin",
        lambda s, d: ClientBundle(s.data_dir / "admin.pem", s.data_dir / "admin-key.pem", "", ""),
        "200",
    ),
    ("auditor", lambda s, d: enroll_client(s, d, profile="auditor", name="alice"), "200"),
]


def outcome(server: LiveServer, bundle: ClientBundle | None, path: str) -> tuple[str, str]:
    """("refused" or the HTTP status, a description) for one GET over a fresh connection."""
    context = server.ssl_context(bundle.cert, bundle.key) if bundle else server.ssl_context()
    try:
        with httpx.Client(base_url=server.mtls_url, verify=context, timeout=10) as client:
            response = client.get(path)
    except httpx.TransportError as exc:
        return REFUSED, f"no HTTP answer ({type(exc).__name__}: {exc})"
    if response.status_code == 403:
        assert response.headers["content-type"] == PROBLEM_JSON, response.text
        return REFUSED, f"403 {response.json()['detail']}"
    return str(response.status_code), response.text[:200]


@pytest.mark.slow
def test_mtls_matrix(live_server: LiveServer, tmp_path: Path) -> None:
    """Issue 12's matrix on both an auditor route and the docs; a TLS session resumed after
    a revocation is test_revoked_certificate_is_refused_on_new_and_resumed_sessions."""
    table = []
    wrong = []
    for index, (case, make, expected) in enumerate(MATRIX_CASES):
        bundle = make(live_server, tmp_path / f"case{index}")
        for path in ("/admin/cas", "/openapi.json"):
            got, detail = outcome(live_server, bundle, path)
            table.append(f"{case:<72} {path:<14} {got:<8} {detail}")
            if got != expected:
                wrong.append(f"{case} {path}: expected {expected}, got {got}: {detail}")
    print("\n".join(table))
    assert not wrong, "\n".join(wrong)


def test_browser_style_requests_get_nothing_from_the_admin_origin(
    live_server: LiveServer, tmp_path: Path
) -> None:
    """What a browser holding the admin certificate could be made to send: a cross-origin
    form POST is 415 and changes nothing; the docs page carries the strict CSP and names only
    same-origin scripts."""
    victim = enroll_client(live_server, tmp_path, profile="peer", name="victim.internal")
    admin = (
        "--cert",
        str(live_server.data_dir / "admin.pem"),
        "--key",
        str(live_server.data_dir / "admin-key.pem"),
    )

    form = curl(
        live_server,
        f"/admin/certificates/{victim.serial}/revoke",
        *admin,
        "--data",
        "reason=keyCompromise",
    )
    page = curl(live_server, "/docs", *admin, "--include")

    body, code = split_curl_output(form.stdout)
    assert code == "415", form
    assert json.loads(body)["status"] == 415, body
    with live_server.public_client() as public:
        status = public.get(f"/v1/certificates/{victim.serial}/status").json()
    assert status["status"] == "good", status
    text, code = split_curl_output(page.stdout)
    assert code == "200", page
    assert "content-security-policy: default-src 'none'; script-src 'self';" in text.lower()
    assert '<script src="/docs/swagger-ui-bundle.js">' in text, text
    assert "cdn" not in text.lower(), text
