"""Revocation seen by independent relying parties against a real `mintca serve`.

`openssl ocsp` and `openssl verify` (CRL and delta CRL checking), cryptography's OCSP request
builder and pkilint's RFC 5280 / RFC 6960 linters check what the public listener publishes, and
the admin API's revocation rules (reasons, holds, conflicts) are checked through real mTLS.
"""

from __future__ import annotations

import base64
import email.utils
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pkilint import loader as pkilint_loader
from pkilint import pkix as pkilint_pkix
from pkilint import validation as pkilint_validation
from pkilint.pkix import crl as pkilint_crl
from pkilint.pkix import extension as pkilint_extension
from pkilint.pkix import name as pkilint_name
from pkilint.pkix import ocsp as pkilint_ocsp

from app.config import Settings
from tests.helpers import foreign_ca
from tests.integration.live import LiveServer, start_server, stop_server

pytestmark = pytest.mark.integration

OPENSSL = "/usr/bin/openssl"
COMMAND_TIMEOUT = 60
# How far a published thisUpdate / revocationDate may be from the moment of the revocation.
FRESH = timedelta(seconds=5)
PROBLEM_JSON = "application/problem+json"
VERIFY_OK = "Response verify OK"


# --- Helpers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Enrolled:
    """A certificate enrolled on the live server, with its files for openssl."""

    serial: str
    certificate: x509.Certificate
    cert_path: Path
    issuing_path: Path  # the issuing CA alone (what `openssl ocsp -issuer` wants)
    chain_path: Path  # issuing CA then root, as enrollment returned them

    @property
    def issuing(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.issuing_path.read_bytes())


class Pki:
    """The test's view of a live server: an admin client, a public client, a token."""

    def __init__(self, server: LiveServer, directory: Path) -> None:
        self.server = server
        self.directory = directory
        self.admin = server.admin_client()
        self.public = server.public_client()
        created = self.admin.post("/admin/tokens", json={"names": ["*.internal"], "max_uses": 20})
        assert created.status_code == 201, created.text
        self._token: str = created.json()["token"]
        cas = self.admin.get("/admin/cas")
        assert cas.status_code == 200, cas.text
        active = [ca for ca in cas.json() if ca["active"]]
        assert len(active) == 1, cas.text
        self.ca_id: str = active[0]["ca_id"]

    def close(self) -> None:
        self.admin.close()
        self.public.close()

    @property
    def root_path(self) -> Path:
        return self.server.root_pem

    def enroll(self, label: str) -> Enrolled:
        key = ec.generate_private_key(ec.SECP256R1())
        name = f"{label}.internal"
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256())
        )
        answer = self.public.post(
            "/v1/certificates",
            json={"csr": csr.public_bytes(serialization.Encoding.PEM).decode()},
            headers={"Authorization": f"Bearer {self._token}"},
        )
        assert answer.status_code == 201, answer.text
        body = answer.json()
        directory = self.directory / label
        directory.mkdir()
        cert_path = directory / "cert.pem"
        cert_path.write_text(body["certificate"])
        issuing_path = directory / "issuing.pem"
        issuing_path.write_text(body["chain"][0])
        chain_path = directory / "chain.pem"
        chain_path.write_text("".join(body["chain"]))
        return Enrolled(
            serial=body["serial"],
            certificate=x509.load_pem_x509_certificate(body["certificate"].encode()),
            cert_path=cert_path,
            issuing_path=issuing_path,
            chain_path=chain_path,
        )

    def revoke(self, serial: str, body: Any) -> httpx.Response:
        return self.admin.post(f"/admin/certificates/{serial}/revoke", json=body)

    def revoked(self, serial: str, reason: str, **extra: Any) -> dict[str, Any]:
        answer = self.revoke(serial, {"reason": reason, **extra})
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    def unhold(self, serial: str) -> httpx.Response:
        return self.admin.post(f"/admin/certificates/{serial}/unhold", json={})

    def status(self, serial: str) -> dict[str, Any]:
        answer = self.public.get(f"/v1/certificates/{serial}/status")
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    def crl_response(self, *, delta: bool = False, **headers: str) -> httpx.Response:
        suffix = "-delta.crl" if delta else ".crl"
        return self.public.get(f"/crl/{self.ca_id}{suffix}", headers=headers)

    def crl(self, *, delta: bool = False) -> x509.CertificateRevocationList:
        answer = self.crl_response(delta=delta)
        assert answer.status_code == 200, answer.text
        return x509.load_der_x509_crl(answer.content)

    def ocsp_post(self, request_der: bytes) -> httpx.Response:
        answer = self.public.post(
            "/ocsp", content=request_der, headers={"Content-Type": "application/ocsp-request"}
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/ocsp-response", answer.headers
        return answer


@pytest.fixture(scope="module")
def server(
    database_factory: Any, initialised_template: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """One `mintca serve` for the module (starting one costs seconds), on its own copy of the
    session's initialised CA, as `initialised_settings` makes one per test. Tests share it, so
    each enrolls its own certificates and asserts only relative facts about CRL numbers."""
    directory = tmp_path_factory.mktemp("revocation-interop")
    data_dir = directory / "data"
    shutil.copytree(initialised_template.data_dir, data_dir)
    url = database_factory.clone(initialised_template.database_url, "interop", directory)
    settings = Settings(  # _env_file: pydantic-settings' init keyword, as in make_settings
        data_dir=data_dir,
        database_url=url,
        kek=initialised_template.kek,
        kek_file=None,
        _env_file=None,
    )
    try:
        process, live = start_server(settings, directory / "serve.log")
        try:
            yield live
        finally:
            stop_server(process)
    finally:
        database_factory.discard(url)


@pytest.fixture
def pki(server: LiveServer, tmp_path: Path) -> Iterator[Pki]:
    directory = tmp_path / "pki"
    directory.mkdir()
    made = Pki(server, directory)
    try:
        yield made
    finally:
        made.close()


def run(*args: str | Path) -> str:
    """Run a command with a timeout; stdout and stderr together (openssl splits its news)."""
    completed = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    return f"{completed.stdout}{completed.stderr}\n[exit {completed.returncode}]"


def openssl_ocsp(pki: Pki, *certs: Enrolled, extra: tuple[str, ...] = ()) -> str:
    issuer = certs[0].issuing_path
    cert_args = [a for c in certs for a in ("-cert", str(c.cert_path))]
    return run(
        OPENSSL,
        "ocsp",
        *extra,
        "-issuer",
        issuer,
        *cert_args,
        "-url",
        f"{pki.server.public_url}/ocsp",
        "-CAfile",
        pki.root_path,
    )


def ocsp_status_of(output: str, cert: Enrolled) -> str:
    """The status `openssl ocsp` printed for one -cert file."""
    match = re.search(rf"^{re.escape(str(cert.cert_path))}: (\w+)", output, re.MULTILINE)
    assert match, output
    return match[1]


def openssl_verify(pki: Pki, cert: Enrolled, crl_file: Path, *flags: str) -> str:
    return run(
        OPENSSL,
        "verify",
        "-crl_check",
        *flags,
        "-CAfile",
        pki.root_path,
        "-untrusted",
        cert.chain_path,
        "-CRLfile",
        crl_file,
        cert.cert_path,
    )


def write_pem_crls(path: Path, *crls: x509.CertificateRevocationList) -> Path:
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in crls))
    return path


def crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def delta_base(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.DeltaCRLIndicator).value.crl_number


def entry_reason(entry: x509.RevokedCertificate) -> x509.ReasonFlags | None:
    try:
        return entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return None


def entry_for(crl: x509.CertificateRevocationList, serial: str) -> x509.RevokedCertificate | None:
    return crl.get_revoked_certificate_by_serial_number(int(serial, 16))


def describe_crl(crl: x509.CertificateRevocationList) -> str:
    entries = ", ".join(f"{e.serial_number:x}:{entry_reason(e)}" for e in crl)
    return f"CRL #{crl_number(crl)} thisUpdate={crl.last_update_utc} entries=[{entries}]"


def near(moment: datetime, expected: datetime) -> bool:
    return abs(moment - expected) <= FRESH


def request_for(
    cert: Enrolled, algorithm: hashes.HashAlgorithm, *, serial: int | None = None
) -> bytes:
    """An OCSP request built by cryptography; a random `serial` keeps the issuer's hashes."""
    template = (
        ocsp.OCSPRequestBuilder().add_certificate(cert.certificate, cert.issuing, algorithm).build()
    )
    if serial is None:
        return template.public_bytes(serialization.Encoding.DER)
    built = (
        ocsp.OCSPRequestBuilder()
        .add_certificate_by_hash(
            template.issuer_name_hash, template.issuer_key_hash, serial, algorithm
        )
        .build()
    )
    return built.public_bytes(serialization.Encoding.DER)


def verify_ocsp_signature(response: ocsp.OCSPResponse, issuing: x509.Certificate) -> None:
    """The answer is signed by a delegated responder that the issuing CA certified for OCSP
    signing and marked id-pkix-ocsp-nocheck (RFC 6960 §4.2.2.2)."""
    assert len(response.certificates) == 1, response.certificates
    responder = response.certificates[0]
    responder.verify_directly_issued_by(issuing)
    eku = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.OCSP_SIGNING], eku
    responder.extensions.get_extension_for_class(x509.OCSPNoCheck)
    key = responder.public_key()
    data, signature = response.tbs_response_bytes, response.signature
    if isinstance(key, ec.EllipticCurvePublicKey):
        assert response.signature_hash_algorithm is not None
        key.verify(signature, data, ec.ECDSA(response.signature_hash_algorithm))
    elif isinstance(key, rsa.RSAPublicKey):
        assert response.signature_hash_algorithm is not None
        key.verify(signature, data, padding.PKCS1v15(), response.signature_hash_algorithm)
    else:
        assert isinstance(key, ed25519.Ed25519PublicKey), type(key)
        key.verify(signature, data)


def assert_problem(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith(PROBLEM_JSON), answer.headers
    body: dict[str, Any] = answer.json()
    assert body["status"] == status, body
    for member in ("type", "title", "detail"):
        assert body[member], body
    return body


def max_age(cache_control: str) -> int:
    match = re.search(r"max-age=(\d+)", cache_control)
    assert match, cache_control
    return int(match[1])


# --- OCSP with openssl -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra", [pytest.param((), id="nonce"), pytest.param(("-no_nonce",), id="no_nonce")]
)
def test_openssl_ocsp_good_then_revoked(pki: Pki, extra: tuple[str, ...]) -> None:
    """Without a nonce the first answer is cached: the revocation must still show at once."""
    cert = pki.enroll("ocsp")

    before = openssl_ocsp(pki, cert, extra=extra)
    pki.revoked(cert.serial, "keyCompromise")
    after = openssl_ocsp(pki, cert, extra=extra)

    assert ocsp_status_of(before, cert) == "good", before
    assert VERIFY_OK in before, before
    assert ocsp_status_of(after, cert) == "revoked", after
    assert "Reason: keyCompromise" in after, after
    assert VERIFY_OK in after, after
    for output in (before, after):
        assert "WARNING" not in output, output  # e.g. "no nonce in response"


def test_openssl_ocsp_answers_every_certificate_of_a_request(pki: Pki) -> None:
    good, bad = pki.enroll("multi-good"), pki.enroll("multi-bad")
    pki.revoked(bad.serial, "superseded")

    output = openssl_ocsp(pki, good, bad)

    assert ocsp_status_of(output, good) == "good", output
    assert ocsp_status_of(output, bad) == "revoked", output
    assert "Reason: superseded" in output, output
    assert VERIFY_OK in output, output


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(lambda b64: quote(b64, safe=""), id="url-encoded"),
        pytest.param(lambda b64: b64, id="plain"),
    ],
)
def test_ocsp_get_is_cacheable_and_verifies(pki: Pki, tmp_path: Path, encode: Any) -> None:
    cert = pki.enroll("get")
    request_path = tmp_path / "req.der"
    made = run(
        OPENSSL,
        "ocsp",
        "-issuer",
        cert.issuing_path,
        "-cert",
        cert.cert_path,
        "-no_nonce",
        "-reqout",
        request_path,
    )
    assert request_path.exists(), made
    url = "/ocsp/" + encode(base64.b64encode(request_path.read_bytes()).decode())

    def get_and_verify(expected: str) -> httpx.Response:
        answer = pki.public.get(url)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/ocsp-response", answer.headers
        response_path = tmp_path / f"resp-{expected}.der"
        response_path.write_bytes(answer.content)
        output = run(
            OPENSSL,
            "ocsp",
            "-respin",
            response_path,
            "-issuer",
            cert.issuing_path,
            "-cert",
            cert.cert_path,
            "-CAfile",
            pki.root_path,
        )
        assert ocsp_status_of(output, cert) == expected, output
        assert VERIFY_OK in output, output
        # RFC 5019 §6: GET answers are cacheable, bounded by nextUpdate.
        parsed = ocsp.load_der_ocsp_response(answer.content)
        assert parsed.next_update_utc is not None
        remaining = (parsed.next_update_utc - datetime.now(UTC)).total_seconds()
        assert 0 < max_age(answer.headers["cache-control"]) <= remaining + 1, answer.headers
        assert answer.headers["etag"], answer.headers
        last_modified = email.utils.parsedate_to_datetime(answer.headers["last-modified"])
        assert last_modified == parsed.this_update_utc, answer.headers
        return answer

    good = get_and_verify("good")
    again = get_and_verify("good")
    pki.revoked(cert.serial, "keyCompromise")
    revoked = get_and_verify("revoked")

    assert again.headers["etag"] == good.headers["etag"], "a nonce-less answer is reused"
    assert revoked.headers["etag"] != good.headers["etag"], revoked.headers


def test_ocsp_unknown_for_a_serial_never_issued(pki: Pki) -> None:
    cert = pki.enroll("unknown")
    serial = int.from_bytes(os.urandom(19), "big") | 1

    answer = pki.ocsp_post(request_for(cert, hashes.SHA1(), serial=serial))

    response = ocsp.load_der_ocsp_response(answer.content)
    assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL, answer.content.hex()
    assert response.certificate_status == ocsp.OCSPCertStatus.UNKNOWN
    assert response.serial_number == serial
    verify_ocsp_signature(response, cert.issuing)


def test_ocsp_unauthorized_for_an_issuer_mintca_does_not_run(pki: Pki, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    ca_key, foreign = foreign_ca("Somebody Else's CA")
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x.internal")]))
        .issuer_name(foreign.subject)
        .public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    request = ocsp.OCSPRequestBuilder().add_certificate(leaf, foreign, hashes.SHA1()).build()
    (tmp_path / "foreign-ca.pem").write_bytes(foreign.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "foreign-leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))

    answer = pki.ocsp_post(request.public_bytes(serialization.Encoding.DER))
    output = run(
        OPENSSL,
        "ocsp",
        "-issuer",
        tmp_path / "foreign-ca.pem",
        "-cert",
        tmp_path / "foreign-leaf.pem",
        "-url",
        f"{pki.server.public_url}/ocsp",
    )

    response = ocsp.load_der_ocsp_response(answer.content)
    assert response.response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED, answer.content.hex()
    assert "unauthorized" in output.lower(), output


def test_ocsp_sha256_cert_id_is_echoed(pki: Pki, tmp_path: Path) -> None:
    """`openssl ocsp -sha256` (before -cert) hashes the CertID with SHA-256 in OpenSSL 3."""
    cert = pki.enroll("sha256")
    request_path, response_path = tmp_path / "req.der", tmp_path / "resp.der"

    output = openssl_ocsp(
        pki,
        cert,
        extra=("-sha256", "-reqout", str(request_path), "-respout", str(response_path)),
    )

    request = ocsp.load_der_ocsp_request(request_path.read_bytes())
    assert isinstance(request.hash_algorithm, hashes.SHA256), request.hash_algorithm
    response = ocsp.load_der_ocsp_response(response_path.read_bytes())
    assert isinstance(response.hash_algorithm, hashes.SHA256), response.hash_algorithm
    assert response.issuer_name_hash == request.issuer_name_hash
    assert response.issuer_key_hash == request.issuer_key_hash
    assert response.serial_number == cert.certificate.serial_number
    assert ocsp_status_of(output, cert) == "good", output
    assert VERIFY_OK in output, output


# --- CRLs with openssl verify ------------------------------------------------------------------


def test_openssl_verify_with_the_full_crl(pki: Pki, tmp_path: Path) -> None:
    good, bad = pki.enroll("crl-good"), pki.enroll("crl-bad")
    pki.revoked(bad.serial, "keyCompromise")
    pem = pki.public.get(f"/crl/{pki.ca_id}.pem")
    assert pem.status_code == 200, pem.text
    crl_file = tmp_path / "crl.pem"
    crl_file.write_bytes(pem.content)

    rejected = openssl_verify(pki, bad, crl_file)
    accepted = openssl_verify(pki, good, crl_file)

    assert "certificate revoked" in rejected, rejected
    assert "[exit 0]" not in rejected, rejected
    assert f"{good.cert_path}: OK" in accepted, accepted
    assert "[exit 0]" in accepted, accepted


def test_openssl_verify_with_an_old_full_crl_and_the_new_delta(pki: Pki, tmp_path: Path) -> None:
    """The base full CRL predates the revocation; only the delta fetched afterwards carries it.

    With `-use_deltas` alone OpenSSL 3 also accepts a delta CRL as if it were complete, so the
    combination is proven with `-extended_crl` too, where the delta alone is refused for want
    of a base.
    """
    good, fresh = pki.enroll("delta-good"), pki.enroll("delta-fresh")
    early = pki.enroll("delta-early")
    pki.revoked(early.serial, "superseded")
    base = pki.crl()
    pki.revoked(fresh.serial, "keyCompromise")
    delta = pki.crl(delta=True)
    base_only = write_pem_crls(tmp_path / "base.pem", base)
    delta_only = write_pem_crls(tmp_path / "delta.pem", delta)
    combined = write_pem_crls(tmp_path / "base+delta.pem", base, delta)

    assert entry_for(base, fresh.serial) is None, describe_crl(base)
    assert entry_for(base, early.serial) is not None, describe_crl(base)
    assert delta_base(delta) <= crl_number(base) < crl_number(delta), describe_crl(delta)
    assert entry_for(delta, fresh.serial) is not None, describe_crl(delta)

    before = openssl_verify(pki, fresh, base_only)
    assert f"{fresh.cert_path}: OK" in before, f"the base alone must not know it:\n{before}"
    for flags in (("-use_deltas",), ("-use_deltas", "-extended_crl")):
        rejected = openssl_verify(pki, fresh, combined, *flags)
        still_rejected = openssl_verify(pki, early, combined, *flags)
        accepted = openssl_verify(pki, good, combined, *flags)
        assert "certificate revoked" in rejected, f"{flags}: {rejected}"
        assert "certificate revoked" in still_rejected, f"{flags}: {still_rejected}"
        assert f"{good.cert_path}: OK" in accepted, f"{flags}: {accepted}"
    no_base = openssl_verify(pki, good, delta_only, "-use_deltas", "-extended_crl")
    assert "unable to get certificate CRL" in no_base, no_base


# --- Revocation lifecycle ----------------------------------------------------------------------


def test_revocation_is_in_ocsp_and_a_new_crl_at_once(pki: Pki) -> None:
    cert = pki.enroll("lifecycle")
    full_before, delta_before = pki.crl(), pki.crl(delta=True)

    started = datetime.now(UTC)
    pki.revoked(cert.serial, "keyCompromise")
    ocsp_answer = pki.ocsp_post(request_for(cert, hashes.SHA1()))
    full, delta = pki.crl(), pki.crl(delta=True)

    response = ocsp.load_der_ocsp_response(ocsp_answer.content)
    assert response.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert response.revocation_reason == x509.ReasonFlags.key_compromise
    verify_ocsp_signature(response, cert.issuing)
    # RFC 5280 §5.2.3: a new CRL carries a strictly greater number, full and delta alike, and
    # the full and delta CRL issued together share it.
    assert crl_number(full) > max(crl_number(full_before), crl_number(delta_before))
    assert crl_number(delta) == crl_number(full) >= delta_base(delta), describe_crl(delta)
    for crl in (full, delta):
        assert near(crl.last_update_utc, started), describe_crl(crl)
        assert crl.next_update_utc is not None
        assert crl.next_update_utc > started, describe_crl(crl)
        assert crl.is_signature_valid(cert.issuing.public_key()), describe_crl(crl)
        entry = entry_for(crl, cert.serial)
        assert entry is not None, describe_crl(crl)
        assert entry_reason(entry) == x509.ReasonFlags.key_compromise, describe_crl(crl)
        assert near(entry.revocation_date_utc, started), describe_crl(crl)
    # The certificate points at the full CRL, and the full CRL at the delta (FreshestCRL).
    crl_dp = cert.certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    expected_url = f"{pki.server.public_url}/crl/{pki.ca_id}.crl"
    assert [n.value for dp in crl_dp.value for n in dp.full_name or []] == [expected_url]
    freshest = full.extensions.get_extension_for_class(x509.FreshestCRL).value
    delta_urls = [n.value for dp in freshest for n in dp.full_name or []]
    assert delta_urls == [f"{pki.server.public_url}/crl/{pki.ca_id}-delta.crl"], delta_urls


def test_hold_then_unhold(pki: Pki) -> None:
    cert = pki.enroll("hold")

    pki.revoked(cert.serial, "certificateHold")
    held_status = pki.status(cert.serial)
    held_ocsp = ocsp.load_der_ocsp_response(pki.ocsp_post(request_for(cert, hashes.SHA1())).content)
    held_crl = pki.crl()
    unheld = pki.unhold(cert.serial)
    full, delta = pki.crl(), pki.crl(delta=True)
    released_ocsp = ocsp.load_der_ocsp_response(
        pki.ocsp_post(request_for(cert, hashes.SHA1())).content
    )
    released_status = pki.status(cert.serial)
    again = pki.unhold(cert.serial)

    assert held_status["status"] == "revoked", held_status
    assert held_status["reason"] == "certificateHold", held_status
    assert held_ocsp.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert held_ocsp.revocation_reason == x509.ReasonFlags.certificate_hold
    held_entry = entry_for(held_crl, cert.serial)
    assert held_entry is not None, describe_crl(held_crl)
    assert entry_reason(held_entry) == x509.ReasonFlags.certificate_hold, describe_crl(held_crl)

    assert unheld.status_code == 200, unheld.text
    assert unheld.json()["status"] == "good", unheld.text
    assert crl_number(full) > crl_number(held_crl), describe_crl(full)
    assert entry_for(full, cert.serial) is None, describe_crl(full)
    # RFC 5280 §5.3.1: the delta releases the hold with removeFromCRL.
    removed = entry_for(delta, cert.serial)
    assert removed is not None, describe_crl(delta)
    assert entry_reason(removed) == x509.ReasonFlags.remove_from_crl, describe_crl(delta)
    assert released_ocsp.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert released_status["status"] == "good", released_status
    assert released_status["reason"] is None, released_status
    assert released_status["revoked_at"] is None, released_status
    assert_problem(again, 409)


@pytest.mark.parametrize(
    ("first", "second", "expected", "final_reason"),
    [
        pytest.param("keyCompromise", "keyCompromise", 409, "keyCompromise", id="twice"),
        pytest.param("superseded", "keyCompromise", 409, "superseded", id="final then other"),
        pytest.param("keyCompromise", "certificateHold", 409, "keyCompromise", id="final to hold"),
        pytest.param("certificateHold", "certificateHold", 409, "certificateHold", id="hold twice"),
        pytest.param("certificateHold", "keyCompromise", 200, "keyCompromise", id="hold to final"),
    ],
)
def test_revoking_again(
    pki: Pki, first: str, second: str, expected: int, final_reason: str
) -> None:
    cert = pki.enroll("again")
    pki.revoked(cert.serial, first)
    crl_between = pki.crl()

    answer = pki.revoke(cert.serial, {"reason": second})

    if expected == 200:
        assert answer.status_code == 200, answer.text
        full = pki.crl()
        assert crl_number(full) > crl_number(crl_between), describe_crl(full)
    else:
        assert_problem(answer, expected)
        assert crl_number(pki.crl()) == crl_number(crl_between), "a refusal publishes nothing"
    entry = entry_for(pki.crl(), cert.serial)
    assert entry is not None
    # ReasonFlags values are the RFC 5280 names.
    assert entry_reason(entry) == x509.ReasonFlags(final_reason), describe_crl(pki.crl())
    assert pki.status(cert.serial)["reason"] == final_reason


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"reason": "removeFromCRL"}, id="removeFromCRL"),
        pytest.param({"reason": 1}, id="number"),
        pytest.param({"reason": "1"}, id="number as text"),
        pytest.param({"reason": "keycompromise"}, id="wrong case"),
        pytest.param({"reason": "compromised"}, id="unknown name"),
        pytest.param({}, id="no reason"),
        pytest.param({"reason": "keyCompromise", "comment": "x"}, id="unknown field"),
        pytest.param(
            {"reason": "keyCompromise", "invalidity_date": "2025-01-01T00:00:00"},
            id="naive invalidity date",
        ),
        pytest.param(
            {"reason": "keyCompromise", "invalidity_date": "yesterday"}, id="bad invalidity date"
        ),
        pytest.param(
            {"reason": "keyCompromise", "invalidity_date": "2999-01-01T00:00:00Z"},
            id="future invalidity date",
        ),
    ],
)
def test_revoke_refuses_bad_input(pki: Pki, body: Any) -> None:
    cert = pki.enroll("refused")
    number_before = crl_number(pki.crl())

    answer = pki.revoke(cert.serial, body)

    assert_problem(answer, 400)
    assert pki.status(cert.serial)["status"] == "good"
    assert crl_number(pki.crl()) == number_before, "a refusal publishes nothing"


@pytest.mark.parametrize(
    ("action", "serial", "status"),
    [
        pytest.param("revoke", "7" * 38, 404, id="revoke/never issued"),
        pytest.param("unhold", "7" * 38, 404, id="unhold/never issued"),
        pytest.param("revoke", "not-hex", 400, id="revoke/not a serial"),
        pytest.param("revoke", "0", 400, id="revoke/zero"),
        pytest.param("revoke", "f" * 41, 400, id="revoke/longer than 20 octets"),
    ],
)
def test_revoke_unknown_or_invalid_serial(pki: Pki, action: str, serial: str, status: int) -> None:
    answer = pki.admin.post(
        f"/admin/certificates/{serial}/{action}",
        json={"reason": "keyCompromise"} if action == "revoke" else {},
    )

    assert_problem(answer, status)


def test_revoke_accepts_uppercase_colon_separated_serial(pki: Pki) -> None:
    cert = pki.enroll("colons")
    digits = cert.serial.upper().zfill(len(cert.serial) + len(cert.serial) % 2)
    colons = ":".join(digits[i : i + 2] for i in range(0, len(digits), 2))

    revoked = pki.revoked(colons, "affiliationChanged")

    assert revoked["serial"] == cert.serial, revoked
    assert pki.status(cert.serial)["reason"] == "affiliationChanged"


def test_invalidity_date_is_written_to_the_crl_entry(pki: Pki) -> None:
    cert = pki.enroll("invalidity")
    invalid_since = datetime.now(timezone(timedelta(hours=2))).replace(microsecond=0) - timedelta(
        days=3
    )

    revoked = pki.revoked(cert.serial, "keyCompromise", invalidity_date=invalid_since.isoformat())
    full, delta = pki.crl(), pki.crl(delta=True)

    assert datetime.fromisoformat(revoked["invalidity_date"]) == invalid_since, revoked
    for crl in (full, delta):
        entry = entry_for(crl, cert.serial)
        assert entry is not None, describe_crl(crl)
        value = entry.extensions.get_extension_for_class(x509.InvalidityDate).value
        assert value.invalidity_date_utc == invalid_since.astimezone(UTC), describe_crl(crl)


# --- CRL endpoints -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "media_type", "delta"),
    [
        pytest.param(".crl", "application/pkix-crl", False, id="full DER"),
        pytest.param(".pem", "application/x-pem-file", False, id="full PEM"),
        pytest.param("-delta.crl", "application/pkix-crl", True, id="delta DER"),
    ],
)
def test_crl_endpoint_headers_and_revalidation(
    pki: Pki, suffix: str, media_type: str, delta: bool
) -> None:
    url = f"/crl/{pki.ca_id}{suffix}"
    cert = pki.enroll("endpoint")

    first = pki.public.get(url)
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == media_type, first.headers
    if suffix.endswith(".pem"):
        crl = x509.load_pem_x509_crl(first.content)
        assert crl.public_bytes(serialization.Encoding.DER) == pki.crl_response().content
    else:
        crl = x509.load_der_x509_crl(first.content)
    assert crl.is_signature_valid(cert.issuing.public_key())
    assert (x509.DeltaCRLIndicator.oid in [e.oid for e in crl.extensions]) is delta
    etag = first.headers["etag"]
    last_modified = email.utils.parsedate_to_datetime(first.headers["last-modified"])
    assert last_modified == crl.last_update_utc, first.headers
    assert crl.next_update_utc is not None
    remaining = (crl.next_update_utc - datetime.now(UTC)).total_seconds()
    assert 0 < max_age(first.headers["cache-control"]) <= remaining + 1, first.headers

    unchanged = pki.public.get(url, headers={"If-None-Match": etag})
    in_a_list = pki.public.get(url, headers={"If-None-Match": f'"something-else", {etag}'})
    other = pki.public.get(url, headers={"If-None-Match": '"something-else"'})
    pki.revoked(cert.serial, "keyCompromise")
    changed = pki.public.get(url, headers={"If-None-Match": etag})

    for answer in (unchanged, in_a_list):
        assert answer.status_code == 304, answer.text
        assert answer.content == b"", answer.content
        assert answer.headers["etag"] == etag, answer.headers
    assert other.status_code == 200, other.text
    assert other.content == first.content
    assert changed.status_code == 200, changed.text
    assert changed.headers["etag"] != etag, changed.headers
    assert changed.content != first.content


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/crl/{unknown}.crl", id="full DER"),
        pytest.param("/crl/{unknown}.pem", id="full PEM"),
        pytest.param("/crl/{unknown}-delta.crl", id="delta"),
    ],
)
def test_crl_of_an_unknown_ca_is_404(pki: Pki, path: str) -> None:
    answer = pki.public.get(path.format(unknown="0" * 40))

    assert_problem(answer, 404)


# --- pkilint -----------------------------------------------------------------------------------


def _crl_validator() -> Any:
    """What `lint_crl lint -t CRL -p PKIX` runs (RFC 5280 CRL profile)."""
    return pkilint_crl.create_pkix_crl_validator_container(
        [
            pkilint_pkix.create_attribute_decoder(pkilint_name.ATTRIBUTE_TYPE_MAPPINGS),
            pkilint_pkix.create_extension_decoder(pkilint_extension.EXTENSION_MAPPINGS),
        ],
        [
            pkilint_crl.create_issuer_validator_container([]),
            pkilint_crl.create_validity_validator_container([]),
            pkilint_crl.create_extensions_validator_container([]),
        ],
    )


def _ocsp_validator() -> Any:
    """What `lint_ocsp_response lint` runs (RFC 6960)."""
    return pkilint_ocsp.create_pkix_ocsp_response_validator_container(
        [
            pkilint_ocsp.create_response_decoder(),
            pkilint_pkix.create_attribute_decoder(pkilint_name.ATTRIBUTE_TYPE_MAPPINGS),
            pkilint_pkix.create_extension_decoder(pkilint_extension.EXTENSION_MAPPINGS),
        ],
        [],
    )


def _published_documents(pki: Pki) -> dict[str, bytes]:
    """A full CRL and a delta CRL with every kind of entry MintCA writes, and OCSP answers."""
    good, compromised = pki.enroll("lint-good"), pki.enroll("lint-compromised")
    held, released, plain = pki.enroll("lint-held"), pki.enroll("lint-released"), pki.enroll("u")
    invalid_since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    pki.revoked(compromised.serial, "keyCompromise", invalidity_date=invalid_since)
    pki.revoked(held.serial, "certificateHold")
    pki.revoked(released.serial, "certificateHold")
    pki.revoked(plain.serial, "unspecified")
    assert pki.unhold(released.serial).status_code == 200
    delta = pki.crl(delta=True)
    assert entry_for(delta, released.serial) is not None, describe_crl(delta)
    return {
        "full CRL": pki.crl_response().content,
        "delta CRL": pki.crl_response(delta=True).content,
        "OCSP good": pki.ocsp_post(request_for(good, hashes.SHA1())).content,
        "OCSP revoked": pki.ocsp_post(request_for(compromised, hashes.SHA256())).content,
    }


@pytest.mark.parametrize(
    "document", ["full CRL", "delta CRL", "OCSP good", "OCSP revoked"], ids=str
)
def test_pkilint_finds_no_error(pki: Pki, document: str) -> None:
    der = _published_documents(pki)[document]
    if document.endswith("CRL"):
        loaded = pkilint_loader.RFC5280CertificateListDocumentLoader().load_der_document(
            der, document
        )
        results = _crl_validator().validate(loaded.root)
    else:
        loaded = pkilint_loader.RFC6960OCSPResponseDocumentLoader().load_der_document(der, document)
        results = _ocsp_validator().validate(loaded.root)

    findings = [
        f"{r.validator} @ {r.node.path}: {f}" for r in results for f in r.finding_descriptions
    ]
    serious = [
        f
        for r in results
        for f in r.finding_descriptions
        if f.finding.severity
        in (
            pkilint_validation.ValidationFindingSeverity.FATAL,
            pkilint_validation.ValidationFindingSeverity.ERROR,
        )
    ]
    assert serious == [], "\n".join(findings)
    print(f"pkilint {document}: {len(findings)} finding(s) below ERROR", *findings, sep="\n")
