"""In-process clients of both apps, and helpers to make keys, CSRs and tokens.

- `public_client`: the public app on the test's `services`.
- `mtls_client_for(pem)`: the mtls app, with `pem` presented as the verified client certificate
  through the ASGI TLS extension, exactly as app.server.tls_scope does for a real handshake.
- `admin_client`: `mtls_client_for` the data dir's admin certificate.
- `make_key(kind)`, `make_csr(...)`: keys of any type and CSRs with any names and extensions.
- `new_token(...)`: a token made through `POST /admin/tokens`.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient

from app.api.apps import create_mtls_asgi, create_public_app
from app.config import Settings
from app.server.tls_scope import TLSScopeApp
from app.services.container import Services

PROBLEM_JSON = "application/problem+json"
PROBLEM_PREFIX = "urn:mintca:problem:"

SigningKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
    | dsa.DSAPrivateKey
)


# --- Keys and CSRs --------------------------------------------------------------------------------


def _generate_key(kind: str) -> SigningKey:
    if kind == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "ec-p521":
        return ec.generate_private_key(ec.SECP521R1())
    if kind == "ec-secp256k1":
        return ec.generate_private_key(ec.SECP256K1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "ed448":
        return ed448.Ed448PrivateKey.generate()
    if kind == "dsa-2048":
        return dsa.generate_private_key(2048)
    if kind.startswith("rsa-"):
        # "rsa-2048" or "rsa-2048-e3"
        _, bits, *exponent = kind.split("-")
        e = int(exponent[0].removeprefix("e")) if exponent else 65537
        return rsa.generate_private_key(public_exponent=e, key_size=int(bits))
    raise ValueError(f"unknown key kind {kind!r}")


@functools.cache
def _cached_key(kind: str) -> SigningKey:
    return _generate_key(kind)


def new_key(kind: str = "ec-p256", *, fresh: bool | None = None) -> SigningKey:
    """A private key. EC and EdDSA keys are fresh each time; RSA and DSA keys are made once per
    session (DSA 2048 takes seconds) unless `fresh=True`."""
    if fresh is None:
        fresh = not kind.startswith(("rsa-", "dsa-"))
    return _generate_key(kind) if fresh else _cached_key(kind)


def _hash_for(key: SigningKey) -> hashes.HashAlgorithm | None:
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    return hashes.SHA256()


def build_csr(
    key: SigningKey | None = None,
    *,
    cn: str | None = None,
    dns: Sequence[str] = (),
    ips: Sequence[str] = (),
    uris: Sequence[str] = (),
    emails: Sequence[str] = (),
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
) -> x509.CertificateSigningRequest:
    """A CSR signed by `key` (a fresh P-256 key by default) with a CN, SANs and any extra
    (extension, critical) pairs."""
    key = key or new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    sans: list[x509.GeneralName] = [
        *(x509.DNSName(n) for n in dns),
        *(x509.IPAddress(ipaddress.ip_address(n)) for n in ips),
        *(x509.UniformResourceIdentifier(n) for n in uris),
        *(x509.RFC822Name(n) for n in emails),
    ]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(key, _hash_for(key))  # type: ignore[arg-type]


def csr_pem(csr: x509.CertificateSigningRequest) -> str:
    return csr.public_bytes(Encoding.PEM).decode()


def csr_der(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(Encoding.DER)


@dataclass(frozen=True)
class CSRTools:
    """The CSR helpers as one fixture (helpers in a conftest are not importable)."""

    new_key: Callable[..., SigningKey] = new_key
    build: Callable[..., x509.CertificateSigningRequest] = build_csr
    pem: Callable[[x509.CertificateSigningRequest], str] = csr_pem
    der: Callable[[x509.CertificateSigningRequest], bytes] = csr_der

    def pem_for(self, *names: str, key: SigningKey | None = None) -> str:
        """A PEM CSR with CN = the first name and every name as a DNS SAN."""
        return csr_pem(build_csr(key, cn=names[0], dns=names))


@pytest.fixture
def csrs() -> CSRTools:
    return CSRTools()


# --- Problems -------------------------------------------------------------------------------------


def check_problem(response: Any, status: int, slug: str | None = None) -> dict[str, Any]:
    """Assert an RFC 9457 problem document with `status` (and the type `slug`)."""
    body = response.text
    assert response.status_code == status, f"{response.status_code} {body}"
    content_type = response.headers.get("content-type", "")
    assert content_type.startswith(PROBLEM_JSON), f"{content_type}: {body}"
    problem = response.json()
    missing = {"type", "title", "status", "detail"} - set(problem)
    assert not missing, f"missing {missing}: {body}"
    assert problem["status"] == status, body
    assert problem["type"].startswith(PROBLEM_PREFIX), body
    for member in ("title", "detail"):
        assert isinstance(problem[member], str), body
        assert problem[member], body
    if slug is not None:
        assert problem["type"] == PROBLEM_PREFIX + slug, body
    return dict(problem)


@pytest.fixture
def problem() -> Callable[..., dict[str, Any]]:
    """`problem(response, status, slug)`: assert a problem document and return it."""
    return check_problem


# --- Clients --------------------------------------------------------------------------------------


# Enrollment over plain HTTP is refused unless MINTCA_ALLOW_INSECURE_TOKENS=true and the client
# is on loopback (README, Security); the in-process client is a loopback client with the flag.
LOOPBACK_CLIENT = ("127.0.0.1", 50000)


@pytest.fixture
def public_client(services: Services) -> Iterator[TestClient]:
    services.settings = services.settings.model_copy(update={"allow_insecure_tokens": True})
    with TestClient(create_public_app(services), client=LOOPBACK_CLIENT) as client:
        yield client


MTLSClientFactory = Callable[[str], TestClient]


@pytest.fixture
def mtls_client_for(services: Services) -> Iterator[MTLSClientFactory]:
    """`mtls_client_for(pem)`: a client of the mtls app that presents `pem` as its verified
    certificate, the way the TLS layer hands it over (the ASGI TLS extension); the app is
    what the listener serves, behind the revocation fast path."""
    app = create_mtls_asgi(services)
    with ExitStack() as stack:

        def make(cert_pem: str) -> TestClient:
            wrapped = TLSScopeApp(app, {"client_cert_chain": [cert_pem]})
            return stack.enter_context(TestClient(wrapped))

        yield make


@pytest.fixture
def admin_pem(initialised_settings: Settings) -> str:
    """The first PEM block of the data dir's admin.pem (the admin leaf)."""
    bundle = (initialised_settings.data_dir / "admin.pem").read_bytes()
    first = x509.load_pem_x509_certificates(bundle)[0]
    return first.public_bytes(Encoding.PEM).decode()


@pytest.fixture
def admin_client(mtls_client_for: MTLSClientFactory, admin_pem: str) -> TestClient:
    return mtls_client_for(admin_pem)


# --- Tokens ---------------------------------------------------------------------------------------


TokenFactory = Callable[..., dict[str, Any]]


@pytest.fixture
def new_token(admin_client: TestClient) -> TokenFactory:
    """`new_token(names=[...], profile=..., ...)`: `POST /admin/tokens`, returning its answer
    `{"token", "id", "expires_at"}`. Unset options are left to the server's defaults."""

    def make(names: Sequence[str] = ("*.zone",), **options: Any) -> dict[str, Any]:
        body = {"names": list(names), **{k: v for k, v in options.items() if v is not None}}
        response = admin_client.post("/admin/tokens", json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    return make
