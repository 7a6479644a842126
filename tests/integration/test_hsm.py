"""CA keys in a PKCS#11 token (SoftHSM2 in a temporary token directory): init and rotation
make the keys inside it; certificates, CRLs and OCSP answers are signed there and verify with
the CA certificates (cryptography, `openssl verify -crl_check_all`, `openssl ocsp` against a
live `mintca serve`); the database holds references, never key material; a wrong PIN or a
missing token stops `serve` with one line."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pkcs11
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from app.ca.keys import generate_private_key, load_private_key_pem
from app.clock import FixedClock
from app.config import Settings
from app.db.models import CARecord
from app.errors import ConfigurationError, InvalidRequestError
from app.services.container import Services
from app.services.recovery import recover_admin
from app.services.setup import InitOptions, initialise
from tests.helpers import enroll_via_services, require_tools
from tests.integration.live import start_server, stop_server
from tests.services.test_keys_at_rest import PEM_MARKER, stored_bytes

TOKEN_LABEL = "mintca-test"
PIN = "3141-5926"
SO_PIN = "2718-2818"
MODULE_PATHS = (
    Path("/usr/lib/softhsm/libsofthsm2.so"),
    Path("/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"),
    Path("/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so"),
)
COMMAND_TIMEOUT = 60
# DER headers of private keys in the clear: PKCS#8 PrivateKeyInfo (version 0, then the
# ecPublicKey or rsaEncryption AlgorithmIdentifier), PKCS#1 RSAPrivateKey and SEC1 ECPrivateKey
# (version 1, then the 32- or 48-byte scalar).
KEY_DER_PATTERNS = {
    "PKCS#8 EC": re.compile(rb"\x02\x01\x00\x30.\x06\x07\x2a\x86\x48\xce\x3d\x02\x01", re.S),
    "PKCS#8 RSA": re.compile(rb"\x02\x01\x00\x30\x0d\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01"),
    # PKCS#1 RSAPrivateKey: version 0, then the modulus (an INTEGER of 256 bytes or more).
    "PKCS#1 RSA": re.compile(rb"\x02\x01\x00\x02\x82"),
    "SEC1 EC P-256": re.compile(rb"\x30\x77\x02\x01\x01\x04\x20"),
    "SEC1 EC P-384": re.compile(rb"\x30\x81\xa4\x02\x01\x01\x04\x30"),
}


@dataclasses.dataclass(frozen=True)
class SoftHsm:
    module: Path
    config: Path
    label: str
    pin_file: Path

    def env(self, *, pin_file: Path | None = None, label: str | None = None) -> dict[str, str]:
        return {
            "SOFTHSM2_CONF": str(self.config),
            "MINTCA_PKCS11_MODULE": str(self.module),
            "MINTCA_PKCS11_TOKEN_LABEL": label or self.label,
            "MINTCA_PKCS11_PIN_FILE": str(pin_file or self.pin_file),
        }


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsm]:
    """One SoftHSM2 token for the session, in its own token directory. SOFTHSM2_CONF is set
    before this process first loads the module (SoftHSM reads it once, at C_Initialize)."""
    require_tools("softhsm2-util", package="softhsm2")
    module = next((path for path in MODULE_PATHS if path.exists()), None)
    if module is None:
        pytest.fail(f"softhsm2-util is installed but no libsofthsm2.so in {MODULE_PATHS}")
    directory = tmp_path_factory.mktemp("softhsm")
    (directory / "tokens").mkdir()
    config = directory / "softhsm2.conf"
    config.write_text(
        f"directories.tokendir = {directory / 'tokens'}\n"
        "objectstore.backend = file\nlog.level = ERROR\n"
    )
    pin_file = directory / "pin"
    pin_file.write_text(PIN + "\n")
    pin_file.chmod(0o600)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOFTHSM2_CONF", str(config))
        subprocess.run(
            [
                *("softhsm2-util", "--init-token", "--free", "--label", TOKEN_LABEL),
                *("--pin", PIN, "--so-pin", SO_PIN),
            ],
            check=True,
            capture_output=True,
            timeout=COMMAND_TIMEOUT,
        )
        yield SoftHsm(module, config, TOKEN_LABEL, pin_file)


def hsm_settings(settings: Settings, softhsm: SoftHsm, **update: object) -> Settings:
    return settings.model_copy(
        update={
            "pkcs11_module": softhsm.module,
            "pkcs11_token_label": softhsm.label,
            "pkcs11_pin_file": softhsm.pin_file,
            **update,
        }
    )


@pytest.fixture
def hsm_services(
    settings: Settings, softhsm: SoftHsm, clock: FixedClock
) -> Iterator[tuple[Services, list[str]]]:
    """An initialised CA whose keys are in the token; OCSP answers signed by the CA itself
    (so that they, too, are signed in the token)."""
    configured = hsm_settings(settings, softhsm, ocsp_signer="ca")
    report = initialise(configured, InitOptions(), clock)
    services = Services(configured, clock=clock)
    try:
        yield services, [report.root_ca_id, report.issuing_ca_id]
    finally:
        services.close()


def token_private_keys(softhsm: SoftHsm) -> dict[str, pkcs11.Key]:
    """The token's private keys by label, seen through a session of this process (logged in:
    PKCS#11 login belongs to the whole process, and the app logged in)."""
    token = pkcs11.lib(str(softhsm.module)).get_token(token_label=softhsm.label)
    session = token.open()
    return {
        key.label: key
        for key in session.get_objects({pkcs11.Attribute.CLASS: pkcs11.ObjectClass.PRIVATE_KEY})
    }


def ca_rows(services: Services) -> list[CARecord]:
    with services.db.read() as session:
        rows = list(session.scalars(select(CARecord)))
        session.expunge_all()
        return rows


def test_init_makes_every_ca_key_inside_the_token(
    hsm_services: tuple[Services, list[str]], softhsm: SoftHsm
) -> None:
    services, ca_ids = hsm_services

    rows = {row.id: row for row in ca_rows(services)}
    keys = token_private_keys(softhsm)

    assert sorted(rows) == sorted(ca_ids)
    for ca_id, row in rows.items():
        assert row.key_wrapped is None, f"CA {ca_id} has a wrapped key in the database"
        assert row.key_ref == f"pkcs11:object={ca_id};type=private", row.key_ref
        key = keys[ca_id]
        attributes = {
            name: key[getattr(pkcs11.Attribute, name)]
            for name in ("SENSITIVE", "ALWAYS_SENSITIVE", "EXTRACTABLE", "NEVER_EXTRACTABLE")
        }
        assert attributes == {
            "SENSITIVE": True,
            "ALWAYS_SENSITIVE": True,
            "EXTRACTABLE": False,
            "NEVER_EXTRACTABLE": True,
        }, f"{ca_id}: {attributes}"
        assert key[pkcs11.Attribute.ID] == bytes.fromhex(ca_id)
        with pytest.raises(pkcs11.PKCS11Error):  # CKR_ATTRIBUTE_SENSITIVE
            key[pkcs11.Attribute.VALUE]
    root = services.keyring.root().certificate
    issuing = services.keyring.loaded_active_issuer().certificate
    root.verify_directly_issued_by(root)
    issuing.verify_directly_issued_by(root)
    assert isinstance(root.signature_hash_algorithm, hashes.SHA384)  # P-384 root
    assert isinstance(issuing.signature_hash_algorithm, hashes.SHA384)  # signed by the root


def ocsp_request(certificate: x509.Certificate, issuer: x509.Certificate) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(
        certificate, issuer, hashes.SHA1()
    )  # RFC 5019 CertIDs
    return builder.build().public_bytes(serialization.Encoding.DER)


def check_ocsp_signed_by(response: ocsp.OCSPResponse, ca: x509.Certificate) -> None:
    key = ca.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey), type(key)
    assert response.signature_hash_algorithm is not None
    key.verify(
        response.signature,
        response.tbs_response_bytes,
        ec.ECDSA(response.signature_hash_algorithm),
    )


def test_enroll_revoke_crl_and_ocsp_are_signed_in_the_token(
    hsm_services: tuple[Services, list[str]],
) -> None:
    services, _ = hsm_services
    issuing = services.keyring.loaded_active_issuer()
    root = services.keyring.root()

    issued = enroll_via_services(services)
    leaf = issued.certificate
    leaf.verify_directly_issued_by(issuing.certificate)
    services.revocation.revoke(
        issued.serial, reason="keyCompromise", invalidity_date=None, actor="test"
    )
    crl = x509.load_der_x509_crl(services.crls.latest(issuing.ca_id).der)
    root_crl = x509.load_der_x509_crl(services.crls.latest(root.ca_id).der)
    answer = ocsp.load_der_ocsp_response(
        services.ocsp.respond(ocsp_request(leaf, issuing.certificate)).der
    )

    assert crl.is_signature_valid(issuing.certificate.public_key())  # type: ignore[arg-type]  # an EC key
    assert crl.get_revoked_certificate_by_serial_number(leaf.serial_number) is not None
    assert root_crl.is_signature_valid(root.certificate.public_key())  # type: ignore[arg-type]  # an EC key
    assert answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED
    check_ocsp_signed_by(answer, issuing.certificate)


def test_delegated_responder_certificate_is_signed_in_the_token(
    hsm_services: tuple[Services, list[str]], softhsm: SoftHsm, clock: FixedClock
) -> None:
    """The delegated responder's key is a software key wrapped by the KEK (README); its
    certificate is signed by the issuing CA inside the token."""
    services, _ = hsm_services
    delegated = Services(
        hsm_settings(services.settings, softhsm, ocsp_signer="delegated"), clock=clock
    )
    try:
        issuing = delegated.keyring.loaded_active_issuer().certificate
        leaf = enroll_via_services(delegated).certificate
        answer = ocsp.load_der_ocsp_response(
            delegated.ocsp.respond(ocsp_request(leaf, issuing)).der
        )
    finally:
        delegated.close()

    assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD
    (responder,) = answer.certificates
    responder.verify_directly_issued_by(issuing)
    check_ocsp_signed_by(answer, responder)


def test_rotation_makes_the_new_key_in_the_token(
    hsm_services: tuple[Services, list[str]], softhsm: SoftHsm
) -> None:
    services, ca_ids = hsm_services

    rotated = services.authorities.rotate(actor="test")
    leaf = enroll_via_services(services).certificate

    assert rotated.ca_id not in ca_ids
    assert rotated.in_token
    assert rotated.ca_id in token_private_keys(softhsm)
    row = next(row for row in ca_rows(services) if row.id == rotated.ca_id)
    assert (row.key_wrapped, row.key_ref) == (None, f"pkcs11:object={rotated.ca_id};type=private")
    rotated.certificate.verify_directly_issued_by(services.keyring.root().certificate)
    leaf.verify_directly_issued_by(rotated.certificate)


def test_rsa_root_and_p384_issuing_ca_sign_in_the_token(
    settings: Settings, softhsm: SoftHsm, clock: FixedClock
) -> None:
    """RSA (CKM_SHA256_RSA_PKCS) and P-384 (CKM_ECDSA over SHA-384) keys, and a rotation
    that asks for a key type a token cannot make."""
    configured = hsm_settings(settings, softhsm)
    initialise(configured, InitOptions(root_key="rsa-2048", issuing_key="ec-p384"), clock)
    services = Services(configured, clock=clock)
    try:
        root, issuing = services.keyring.root(), services.keyring.loaded_active_issuer()
        leaf = enroll_via_services(services).certificate
        crl = x509.load_der_x509_crl(services.crls.latest(root.ca_id).der)
        with pytest.raises(InvalidRequestError, match="PKCS#11 token"):
            services.authorities.rotate(actor="test", key_type="ed25519")
    finally:
        services.close()

    issuing.certificate.verify_directly_issued_by(root.certificate)
    leaf.verify_directly_issued_by(issuing.certificate)
    assert crl.is_signature_valid(root.certificate.public_key())  # type: ignore[arg-type]  # an RSA key
    assert issuing.certificate.signature_algorithm_oid.dotted_string == "1.2.840.113549.1.1.11"
    assert leaf.signature_algorithm_oid.dotted_string == "1.2.840.10045.4.3.3"


def test_threads_share_the_session_safely(hsm_services: tuple[Services, list[str]]) -> None:
    """8 threads signing at once through one process's session: every signature verifies
    (the session's calls are serialised by the token's lock)."""
    services, _ = hsm_services
    issuing = services.keyring.loaded_active_issuer()
    public_key = issuing.certificate.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    messages = [f"message {n}".encode() for n in range(64)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        signatures = list(pool.map(issuing.signer.sign_bytes, messages))

    for message, signature in zip(messages, signatures, strict=True):
        public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))


def test_a_token_key_that_is_not_the_cas_stops_loading(
    hsm_services: tuple[Services, list[str]],
) -> None:
    """The keyring checks each token key against its CA certificate once, at load."""
    services, (_, issuing_id) = hsm_services
    token = services.keyring.token
    assert token is not None
    other_public_key = services.keyring.root().certificate.public_key()

    with pytest.raises(ConfigurationError, match="does not match"):
        token.signer(f"pkcs11:object={issuing_id};type=private", other_public_key)  # type: ignore[arg-type]  # an EC key


def test_admin_recover_signs_in_the_token(
    hsm_services: tuple[Services, list[str]], tmp_path: Path
) -> None:
    """`mintca admin recover` builds its own keyring: it opens the token too."""
    services, _ = hsm_services
    issuing = services.keyring.loaded_active_issuer().certificate

    recovered = recover_admin(
        services.settings, name="break-glass", out_dir=tmp_path / "out", clock=services.clock
    )

    certificate = x509.load_pem_x509_certificate(recovered.certificate_path.read_bytes())
    certificate.verify_directly_issued_by(issuing)


def test_offline_root_stays_a_file_and_its_issuing_cas_go_in_the_token(
    settings: Settings, softhsm: SoftHsm, clock: FixedClock
) -> None:
    configured = hsm_settings(settings, softhsm)
    report = initialise(configured, InitOptions(offline_root=True), clock)
    root_key = load_private_key_pem((settings.data_dir / "root-key.pem").read_bytes())
    services = Services(configured, clock=clock)
    try:
        rotated = services.authorities.rotate(actor="test", root_key=root_key)
        rows = {row.id: row for row in ca_rows(services)}
    finally:
        services.close()

    root_row = rows.pop(report.root_ca_id)
    assert (root_row.key_wrapped, root_row.key_ref) == (None, None)  # offline: the file only
    assert sorted(rows) == sorted([report.issuing_ca_id, rotated.ca_id])
    for ca_id, row in rows.items():
        assert (row.key_wrapped, row.key_ref) == (None, f"pkcs11:object={ca_id};type=private")
    assert rotated.in_token


def key_material(haystack: bytes) -> list[str]:
    found = [name for name, pattern in KEY_DER_PATTERNS.items() if pattern.search(haystack)]
    return found + (["PEM marker"] if PEM_MARKER in haystack else [])


@pytest.mark.parametrize("key_type", ["ec-p256", "ec-p384", "rsa-2048"])
@pytest.mark.parametrize("encoding", ["PKCS8", "TraditionalOpenSSL"])
def test_the_key_material_scan_finds_a_key_in_the_clear(key_type: str, encoding: str) -> None:
    """The scan below can fail: a key in the clear, in either DER form, is found."""
    key = generate_private_key(key_type)
    der = key.private_bytes(
        serialization.Encoding.DER,
        getattr(serialization.PrivateFormat, encoding),
        serialization.NoEncryption(),
    )
    assert key_material(b"some row" + der + b"more rows"), der.hex()


def test_no_private_key_material_in_the_database(
    hsm_services: tuple[Services, list[str]],
) -> None:
    services, _ = hsm_services
    services.revocation.revoke(
        enroll_via_services(services).serial, reason="superseded", invalidity_date=None, actor="t"
    )
    services.authorities.rotate(actor="test")
    for row in ca_rows(services):
        assert row.key_wrapped is None, row.id
        assert (row.key_ref or "").startswith("pkcs11:object="), row.id

    found = {where: key_material(data) for where, data in stored_bytes(services).items()}

    assert found, "nothing was searched"
    assert not {where: what for where, what in found.items() if what}, found


def serve_once(settings: Settings, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "serve"],
        env={
            **os.environ,
            "MINTCA_DATA_DIR": str(settings.data_dir),
            "MINTCA_DATABASE_URL": settings.effective_database_url,
            "MINTCA_KEK": settings.kek or "",
            "MINTCA_PUBLIC_BIND": "127.0.0.1:0",
            "MINTCA_MTLS_BIND": "127.0.0.1:0",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


@pytest.mark.parametrize(
    ("case", "message"),
    [
        pytest.param(
            "wrong pin", "error: PKCS#11: wrong PIN for token 'mintca-test'", id="wrong PIN"
        ),
        pytest.param(
            "no token", "error: PKCS#11: no token labelled 'no-such-token'", id="no token"
        ),
        pytest.param("no pin file", "error: MINTCA_PKCS11_PIN_FILE: cannot read", id="no PIN file"),
    ],
)
def test_serve_stops_with_one_line(
    settings: Settings, softhsm: SoftHsm, tmp_path: Path, case: str, message: str
) -> None:
    wrong_pin = tmp_path / "wrong-pin"
    wrong_pin.write_text("0000\n")
    env = {
        "wrong pin": softhsm.env(pin_file=wrong_pin),
        "no token": softhsm.env(label="no-such-token"),
        "no pin file": softhsm.env(pin_file=tmp_path / "missing"),
    }[case]

    completed = serve_once(settings, env)

    lines = completed.stderr.strip().splitlines()
    assert completed.returncode == 2, completed.stderr
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith(message), completed.stderr
    assert PIN not in completed.stderr + completed.stdout
    assert not (settings.data_dir / "root.pem").exists(), "serve initialised before it stopped"


def run(*args: str | Path) -> str:
    completed = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
    )
    return f"{completed.stdout}{completed.stderr}\n[exit {completed.returncode}]"


@pytest.mark.slow
def test_live_server_signs_in_the_token_for_openssl(
    settings: Settings, softhsm: SoftHsm, clock: FixedClock, tmp_path: Path
) -> None:
    """`mintca serve` with two workers (a session each) over the token: a leaf enrolled over
    HTTP verifies with `openssl verify -crl_check_all` and both CRLs, then is revoked, and
    `openssl ocsp` verifies the CA-signed answer."""
    require_tools("openssl", package="openssl")
    configured = hsm_settings(settings, softhsm)
    report = initialise(configured, InitOptions(), clock)
    process, server = start_server(
        configured,
        tmp_path / "serve.log",
        workers=2,
        extra_env={**softhsm.env(), "MINTCA_OCSP_SIGNER": "ca"},
    )
    try:
        with server.admin_client() as admin, server.public_client() as public:
            token = admin.post("/admin/tokens", json={"names": ["hsm.internal"], "max_uses": 1})
            assert token.status_code == 201, token.text
            key = ec.generate_private_key(ec.SECP256R1())
            csr = (
                x509.CertificateSigningRequestBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hsm.internal")]))
                .add_extension(
                    x509.SubjectAlternativeName([x509.DNSName("hsm.internal")]), critical=False
                )
                .sign(key, hashes.SHA256())
            )
            enrolled = public.post(
                "/v1/certificates",
                json={"csr": csr.public_bytes(serialization.Encoding.PEM).decode()},
                headers={"Authorization": f"Bearer {token.json()['token']}"},
            )
            assert enrolled.status_code == 201, enrolled.text
            body = enrolled.json()
            leaf_path, chain_path, issuing_path = (
                tmp_path / n for n in ("leaf.pem", "chain.pem", "issuing.pem")
            )
            leaf_path.write_text(body["certificate"])
            chain_path.write_text("".join(body["chain"]))
            issuing_path.write_text(body["chain"][0])

            def crls() -> Path:
                path = tmp_path / "crls.pem"
                pems = []
                for ca_id in (report.issuing_ca_id, report.root_ca_id):
                    answer = public.get(f"/crl/{ca_id}.crl")
                    assert answer.status_code == 200, answer.text
                    crl = x509.load_der_x509_crl(answer.content)
                    pems.append(crl.public_bytes(serialization.Encoding.PEM).decode())
                path.write_text("".join(pems))
                return path

            verify = ("openssl", "verify", "-crl_check_all", "-CAfile", server.root_pem)
            before = run(*verify, "-untrusted", chain_path, "-CRLfile", crls(), leaf_path)
            revoked = admin.post(
                f"/admin/certificates/{body['serial']}/revoke", json={"reason": "keyCompromise"}
            )
            assert revoked.status_code == 200, revoked.text
            after = run(*verify, "-untrusted", chain_path, "-CRLfile", crls(), leaf_path)
            ocsp_output = run(
                "openssl",
                "ocsp",
                "-issuer",
                issuing_path,
                "-cert",
                leaf_path,
                "-url",
                f"{server.public_url}/ocsp",
                "-CAfile",
                server.root_pem,
                "-verify_other",
                chain_path,
            )
    finally:
        stop_server(process)

    assert f"{leaf_path}: OK" in before, before
    assert "certificate revoked" in after, after
    assert "Response verify OK" in ocsp_output, ocsp_output
    assert f"{leaf_path}: revoked" in ocsp_output, ocsp_output
    assert PIN not in server.log()
