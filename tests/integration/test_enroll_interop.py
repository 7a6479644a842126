"""Enrollment with CSRs from real tools (openssl req, GnuTLS certtool, `mintca enroll`) against
a live server, over JSON (httpx) and raw PKCS#10 (curl); every certificate is checked by
`openssl verify` and field by field against the SPEC's leaf profile."""

from __future__ import annotations

import ipaddress
import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from tests.helpers import require_tools
from tests.integration.live import LiveServer

pytestmark = pytest.mark.integration

PROCESS_TIMEOUT = 60
NAME = "api.internal"
IP = "127.0.0.1"
TOKEN_NAMES = [NAME, IP]
CURL_VALIDITY_DAYS = 5  # raw PKCS#10 cannot ask for a validity: the token's maximum bounds it
EKUS = {
    "server": {ExtendedKeyUsageOID.SERVER_AUTH},
    "client": {ExtendedKeyUsageOID.CLIENT_AUTH},
    "peer": {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH},
}
# `openssl verify -purpose`: what each profile must be good for.
PURPOSES = {"server": ["sslserver"], "client": ["sslclient"], "peer": ["sslserver", "sslclient"]}
OPENSSL_NEW_KEY = {
    "rsa-2048": ["-newkey", "rsa:2048"],
    "ec-p256": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
    "ed25519": ["-newkey", "ed25519"],
}


def run(*command: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload,no-any-return]
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        check=False,
        **kwargs,
    )


# --- CSRs from real tools ----------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    key_type: str
    csr_source: str  # "openssl" (PEM), "openssl-der", "gnutls-relabelled", "certtool"
    transport: str  # "json" (httpx) or "curl" (application/pkcs10)
    profile: str
    validity_days: int
    subject: bool = True  # False: an empty subject, the names in the SAN only


@dataclass(frozen=True)
class MadeCSR:
    body: bytes  # what is sent: PEM (possibly with text around it) or DER
    key: Path


def openssl_csr(case: Case, directory: Path) -> MadeCSR:
    directory.mkdir(parents=True, exist_ok=True)
    key, out = directory / "key.pem", directory / "csr"
    der = case.csr_source == "openssl-der"
    result = run(
        "openssl",
        "req",
        "-new",
        *OPENSSL_NEW_KEY[case.key_type],
        "-nodes",
        "-keyout",
        key,
        "-subj",
        f"/CN={NAME}" if case.subject else "/",
        "-addext",
        f"subjectAltName=DNS:{NAME},IP:{IP}",
        "-outform",
        "DER" if der else "PEM",
        "-out",
        out,
    )
    assert result.returncode == 0, result.stderr
    body = out.read_bytes()
    if case.csr_source == "gnutls-relabelled":
        # What GnuTLS writes: a text dump, then the legacy label.
        body = (
            b"PKCS #10 Certificate Request Information:\n\tVersion: 1\n\tSubject: CN=api.internal\n"
            + body.replace(b"CERTIFICATE REQUEST", b"NEW CERTIFICATE REQUEST")
            + b"trailing text\n"
        )
        assert b"-----BEGIN NEW CERTIFICATE REQUEST-----" in body
    return MadeCSR(body, key)


def certtool_csr(case: Case, directory: Path) -> MadeCSR:
    require_tools("certtool", package="gnutls-bin")
    assert case.key_type == "ec-p256", case
    directory.mkdir(parents=True, exist_ok=True)
    key, out, template = directory / "key.pem", directory / "csr.pem", directory / "csr.tmpl"
    template.write_text(
        (f'cn = "{NAME}"\n' if case.subject else "") + f'dns_name = "{NAME}"\nip_address = "{IP}"\n'
    )
    made_key = run(
        "certtool",
        "--generate-privkey",
        "--key-type=ecdsa",
        "--curve=secp256r1",
        "--no-text",
        "--outfile",
        key,
    )
    assert made_key.returncode == 0, made_key.stderr
    made = run(
        "certtool",
        "--generate-request",
        "--load-privkey",
        key,
        "--template",
        template,
        "--outfile",
        out,
    )
    assert made.returncode == 0, made.stderr
    body = out.read_bytes()
    assert b"-----BEGIN NEW CERTIFICATE REQUEST-----" in body, body
    return MadeCSR(body, key)


def make_csr(case: Case, directory: Path) -> MadeCSR:
    if case.csr_source == "certtool":
        return certtool_csr(case, directory)
    return openssl_csr(case, directory)


# --- Enrollment --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    leaf: x509.Certificate
    chain: list[x509.Certificate]  # issuing CA, root
    serial: str | None  # from the JSON answer; None for curl
    requested_from: datetime  # just before the request
    requested_until: datetime  # just after the answer


def create_token(server: LiveServer, profile: str, max_validity_days: int | None) -> str:
    body: dict[str, object] = {"profile": profile, "names": TOKEN_NAMES}
    if max_validity_days is not None:
        body["max_validity_days"] = max_validity_days
    with server.admin_client() as admin:
        created = admin.post("/admin/tokens", json=body)
    assert created.status_code == 201, created.text
    return str(created.json()["token"])


def enroll_json(server: LiveServer, case: Case, csr: MadeCSR) -> Issued:
    token = create_token(server, case.profile, None)
    request = {
        "csr": csr.body.decode(),
        "profile": case.profile,
        "validity_days": case.validity_days,
    }
    started = datetime.now(UTC)
    with server.public_client() as public:
        answer = public.post(
            "/v1/certificates", json=request, headers={"Authorization": f"Bearer {token}"}
        )
    finished = datetime.now(UTC)
    assert answer.status_code == 201, answer.text
    assert answer.headers["content-type"] == "application/json", answer.headers
    body = answer.json()
    assert body["profile"] == case.profile, body
    assert len(body["chain"]) == 2, body
    leaf = x509.load_pem_x509_certificate(body["certificate"].encode())
    chain = [x509.load_pem_x509_certificate(c.encode()) for c in body["chain"]]
    assert datetime.fromisoformat(body["not_after"]) == leaf.not_valid_after_utc, body
    assert datetime.fromisoformat(body["not_before"]) == leaf.not_valid_before_utc, body
    return Issued(leaf, chain, body["serial"], started, finished)


def enroll_curl(server: LiveServer, case: Case, csr: MadeCSR, directory: Path) -> Issued:
    token = create_token(server, case.profile, case.validity_days)
    request_file, answer_file = directory / "request.csr", directory / "answer.pem"
    request_file.write_bytes(csr.body)
    started = datetime.now(UTC)
    result = run(
        "curl",
        "--silent",
        "--show-error",
        "--max-time",
        "30",
        "--data-binary",
        f"@{request_file}",
        "-H",
        "Content-Type: application/pkcs10",
        "-H",
        f"Authorization: Bearer {token}",
        "--output",
        answer_file,
        "--write-out",
        "%{http_code}\n%{content_type}",
        f"{server.public_url}/v1/certificates",
    )
    finished = datetime.now(UTC)
    answer = answer_file.read_bytes() if answer_file.exists() else b""
    assert result.returncode == 0, (result.stderr, answer)
    assert result.stdout.split("\n") == ["201", "application/pem-certificate-chain"], (
        result.stdout,
        answer,
    )
    certificates = x509.load_pem_x509_certificates(answer)
    assert len(certificates) == 3, answer  # leaf, issuing CA, root
    return Issued(certificates[0], certificates[1:], None, started, finished)


# --- Checks ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuingCA:
    ca_id: str
    certificate: x509.Certificate
    root: x509.Certificate


def active_issuing_ca(server: LiveServer) -> IssuingCA:
    with server.admin_client() as admin:
        answer = admin.get("/admin/cas")
    assert answer.status_code == 200, answer.text
    active = [ca for ca in answer.json() if ca["active"] and ca["kind"] == "issuing"]
    assert len(active) == 1, answer.json()
    issuing, root = x509.load_pem_x509_certificates((server.data_dir / "ca-chain.pem").read_bytes())
    assert format(issuing.serial_number, "x") == active[0]["serial"], answer.json()
    return IssuingCA(active[0]["ca_id"], issuing, root)


def openssl_verify(issued: Issued, profile: str, directory: Path, root_pem: Path) -> None:
    cert, chain = directory / "cert.pem", directory / "chain.pem"
    cert.write_bytes(issued.leaf.public_bytes(Encoding.PEM))
    chain.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in issued.chain))
    for purpose in PURPOSES[profile]:
        result = run(
            "openssl",
            "verify",
            "-x509_strict",
            "-purpose",
            purpose,
            "-CAfile",
            root_pem,
            "-untrusted",
            chain,
            cert,
        )
        assert result.returncode == 0, (purpose, result.stdout, result.stderr)
        assert result.stdout.strip() == f"{cert}: OK", (purpose, result.stdout, result.stderr)


def spki(certificate: x509.Certificate) -> bytes:
    return certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def public_key_of(key_file: Path) -> bytes:
    """The SubjectPublicKeyInfo (DER) of a private key file, read by openssl: GnuTLS may write
    an EC private scalar without its leading zero octets, which cryptography refuses."""
    result = subprocess.run(
        ["openssl", "pkey", "-in", str(key_file), "-pubout", "-outform", "DER"],
        capture_output=True,
        timeout=PROCESS_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def check_leaf(issued: Issued, case: Case, csr: MadeCSR, ca: IssuingCA, public_url: str) -> None:
    leaf = issued.leaf
    extensions = leaf.extensions
    assert issued.chain == [ca.certificate, ca.root], issued.chain

    # The CSR's key, and the CSR's names (nothing else in the subject).
    assert spki(leaf) == public_key_of(csr.key)
    expected_subject = (
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)])
        if case.subject
        else x509.Name([])
    )
    assert leaf.subject == expected_subject, leaf.subject
    assert leaf.issuer == ca.certificate.subject

    basic = extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical, basic
    assert basic.value.ca is False, basic

    usage = extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical, usage
    is_rsa = isinstance(leaf.public_key(), rsa.RSAPublicKey)
    assert usage.value.digital_signature, usage
    assert usage.value.key_encipherment is is_rsa, usage
    assert not usage.value.key_cert_sign, usage
    assert not usage.value.crl_sign, usage
    assert not usage.value.content_commitment, usage
    assert not usage.value.data_encipherment, usage

    eku = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == EKUS[case.profile], eku
    assert len(list(eku)) == len(EKUS[case.profile]), eku

    san = extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert set(san.value) == {x509.DNSName(NAME), x509.IPAddress(ipaddress.ip_address(IP))}, san
    assert len(list(san.value)) == 2, san
    assert san.critical is not case.subject, san  # critical exactly when the subject is empty

    issuing_ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    aki = extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == issuing_ski.value.digest, aki
    assert extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest

    crl_points = extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert [p.full_name for p in crl_points] == [
        [x509.UniformResourceIdentifier(f"{public_url}/crl/{ca.ca_id}.crl")]
    ], crl_points
    access = extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert {(d.access_method, d.access_location.value) for d in access} == {
        (AuthorityInformationAccessOID.OCSP, f"{public_url}/ocsp"),
        (AuthorityInformationAccessOID.CA_ISSUERS, f"{public_url}/ca/{ca.ca_id}.crt"),
    }, access

    # notBefore backdated a few minutes; notAfter the requested validity after issuance
    # (certificates keep whole seconds, hence the one-second slack).
    second = timedelta(seconds=1)
    not_before, not_after = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    backdate = issued.requested_from - not_before
    assert timedelta(minutes=1) <= backdate <= timedelta(minutes=10), (not_before, backdate)
    validity = timedelta(days=case.validity_days)
    assert (
        issued.requested_from + validity - second
        <= not_after
        <= issued.requested_until + validity + second
    ), (not_after, issued)

    assert 2**64 < leaf.serial_number < 2**159, leaf.serial_number
    if issued.serial is not None:
        assert issued.serial == format(leaf.serial_number, "x"), issued.serial


def check_ca_issuers(issued: Issued, ca: IssuingCA) -> None:
    access = issued.leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    url = next(
        d.access_location.value
        for d in access.value
        if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS
    )
    answer = httpx.get(url, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/pkix-cert", answer.headers
    assert answer.content == ca.certificate.public_bytes(Encoding.DER)


# --- The table ---------------------------------------------------------------------------------

V = CURL_VALIDITY_DAYS
CASES = [
    pytest.param(Case("rsa-2048", "openssl", "json", "server", 7), id="rsa-2048/pem/json/server"),
    pytest.param(Case("ec-p256", "openssl", "json", "client", 45), id="ec-p256/pem/json/client"),
    pytest.param(Case("ed25519", "openssl", "json", "peer", 90), id="ed25519/pem/json/peer"),
    pytest.param(Case("rsa-2048", "openssl", "curl", "peer", V), id="rsa-2048/pem/curl/peer"),
    pytest.param(Case("ec-p256", "openssl", "curl", "server", V), id="ec-p256/pem/curl/server"),
    pytest.param(Case("ed25519", "openssl", "curl", "client", V), id="ed25519/pem/curl/client"),
    pytest.param(Case("ec-p256", "openssl-der", "curl", "server", V), id="ec-p256/der/curl/server"),
    pytest.param(
        Case("rsa-2048", "openssl-der", "curl", "client", V), id="rsa-2048/der/curl/client"
    ),
    pytest.param(
        Case("ec-p256", "openssl", "json", "server", 30, subject=False),
        id="ec-p256/pem/json/server/no subject",
    ),
    pytest.param(
        Case("ed25519", "openssl-der", "curl", "peer", V, subject=False),
        id="ed25519/der/curl/peer/no subject",
    ),
    pytest.param(
        Case("ec-p256", "gnutls-relabelled", "json", "peer", 20),
        id="ec-p256/legacy label with text/json/peer",
    ),
    pytest.param(
        Case("rsa-2048", "gnutls-relabelled", "curl", "server", V),
        id="rsa-2048/legacy label with text/curl/server",
    ),
    pytest.param(
        Case("ec-p256", "certtool", "json", "server", 10), id="ec-p256/certtool/json/server"
    ),
    pytest.param(
        Case("ec-p256", "certtool", "curl", "client", V, subject=False),
        id="ec-p256/certtool/curl/client/no subject",
    ),
]


def test_csrs_from_real_tools_enroll_into_verified_leaves(
    live_server: LiveServer, tmp_path: Path, subtests: pytest.Subtests
) -> None:
    # One server for the whole table (a start costs seconds); each row is a subtest.
    ca = active_issuing_ca(live_server)
    for param in CASES:
        (case,) = param.values
        assert isinstance(case, Case)
        with subtests.test(msg=param.id):
            directory = tmp_path / str(param.id).replace("/", "_").replace(" ", "-")
            csr = make_csr(case, directory)
            if case.transport == "json":
                issued = enroll_json(live_server, case, csr)
            else:
                issued = enroll_curl(live_server, case, csr, directory)
            openssl_verify(issued, case.profile, directory, live_server.root_pem)
            check_leaf(issued, case, csr, ca, live_server.public_url)
            check_ca_issuers(issued, ca)


# --- `mintca enroll` ---------------------------------------------------------------------------


def mintca(*arguments: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The CLI as a separate process, with none of the developer's MINTCA_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINTCA_")}
    return run(sys.executable, "-m", "app.cli", *arguments, cwd=cwd, env=env)


def test_cli_enroll_writes_verified_files_and_fails_on_a_used_token(
    live_server: LiveServer, tmp_path: Path
) -> None:
    with live_server.admin_client() as admin:
        created = admin.post("/admin/tokens", json={"names": ["cli.internal"]})
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    out, second_out = tmp_path / "out", tmp_path / "again"

    enrolled = mintca(
        "enroll", "--token", token, "--name", "cli.internal", "--out", str(out),
        "--url", live_server.public_url, cwd=tmp_path,
    )  # fmt: skip
    reused = mintca(
        "enroll", "--token", token, "--name", "cli.internal", "--out", str(second_out),
        "--url", live_server.public_url, cwd=tmp_path,
    )  # fmt: skip

    assert enrolled.returncode == 0, (enrolled.stdout, enrolled.stderr)
    assert stat.S_IMODE((out / "key.pem").stat().st_mode) == 0o600
    verified = run(
        "openssl",
        "verify",
        "-x509_strict",
        "-CAfile",
        live_server.root_pem,
        "-untrusted",
        out / "chain.pem",
        out / "cert.pem",
    )
    assert verified.returncode == 0, (verified.stdout, verified.stderr)
    assert verified.stdout.strip() == f"{out / 'cert.pem'}: OK", verified.stdout
    leaf = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    assert spki(leaf) == public_key_of(out / "key.pem")
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["cli.internal"], san
    assert format(leaf.serial_number, "x") in enrolled.stdout, enrolled.stdout

    # The token is spent: the server says why, and the CLI passes that on and writes nothing.
    csr = openssl_csr(Case("ec-p256", "openssl", "json", "peer", 1), tmp_path / "probe")
    with live_server.public_client() as public:
        problem = public.post(
            "/v1/certificates",
            json={"csr": csr.body.decode()},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert problem.status_code == 401, problem.text
    detail = json.loads(problem.text)["detail"]
    assert reused.returncode != 0, (reused.stdout, reused.stderr)
    assert detail in reused.stderr, (detail, reused.stdout, reused.stderr)
    assert not second_out.exists(), list(second_out.iterdir())
