"""MintCA's certificates pass cryptography's strict RFC 5280 / CA/B-style verifiers: client,
admin and role certificates (which name their caller in a SAN, SPIFFE-style) with the client
verifier, the mtls server certificate and server/peer leaves with the server verifier."""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from app.clock import FixedClock
from app.config import Settings
from app.errors import NameNotAllowedError, ProfileViolationError
from app.services.container import Services
from app.services.setup import InitOptions, initialise

pytestmark = pytest.mark.db


def csr_pem(cn: str, *, dns: tuple[str, ...] = (), uris: tuple[str, ...] = ()) -> str:
    """A P-256 CSR with `cn` and the given SANs (none by default: a CN-only CSR)."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    )
    sans = [*(x509.DNSName(n) for n in dns), *(x509.UniformResourceIdentifier(u) for u in uris)]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(Encoding.PEM).decode()


def enroll(services: Services, profile: str, csr_pem: str, names: list[str]) -> x509.Certificate:
    token = services.tokens.create(
        actor="test",
        profiles=[profile],
        names=names,
        ttl=timedelta(hours=1),
        max_uses=1,
        max_validity_days=None,
    )
    return services.enrollment.enroll(
        token=token.token, csr_data=csr_pem, profile=profile
    ).certificate


def data_file_leaf(services: Services, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificates((services.settings.data_dir / name).read_bytes())[0]


def builder(services: Services) -> PolicyBuilder:
    store = Store([services.keyring.root().certificate])
    return PolicyBuilder().store(store).time(services.clock.now())


def uris(certificate: x509.Certificate) -> list[str]:
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.UniformResourceIdentifier)


CLIENT_CASES: list[Any] = [
    pytest.param("init admin", "spiffe://mintca.internal/admin/admin", id="init's admin"),
    pytest.param("auditor", "spiffe://mintca.internal/auditor/alice", id="auditor, CN only"),
    pytest.param("operator", "spiffe://mintca.internal/operator/bob", id="operator, CN only"),
    pytest.param("admin", "spiffe://mintca.internal/admin/carol", id="admin, CN only"),
    pytest.param("client", "spiffe://mintca.internal/client/worker-1", id="client, CN only"),
    pytest.param("client san", "spiffe://prod.example/ns/a/sa/w", id="client with its own URI"),
]
CN_OF = {"auditor": "alice", "operator": "bob", "admin": "carol", "client": "worker-1"}


@pytest.mark.parametrize(("kind", "expected_uri"), CLIENT_CASES)
def test_client_verifier_accepts_caller_certificates(
    kind: str, expected_uri: str, services: Services
) -> None:
    issuing = services.keyring.active_issuer().certificate
    if kind == "init admin":
        leaf = data_file_leaf(services, "admin.pem")
    elif kind == "client san":
        csr = csr_pem("worker", uris=(expected_uri,))
        leaf = enroll(services, "client", csr, ["worker", expected_uri])
    else:
        cn = CN_OF[kind]
        leaf = enroll(services, kind, csr_pem(cn), [cn])

    verified = builder(services).build_client_verifier().verify(leaf, [issuing])

    assert uris(leaf) == [expected_uri], leaf.extensions
    assert x509.UniformResourceIdentifier(expected_uri) in (verified.subjects or []), verified
    assert verified.chain[-1] == services.keyring.root().certificate


SERVER_CASES: list[Any] = [
    pytest.param("init server", x509.DNSName("localhost"), id="init's server: localhost"),
    pytest.param(
        "init server",
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        id="init's server: 127.0.0.1",
    ),
    pytest.param("server", x509.DNSName("api.example.internal"), id="server leaf"),
    pytest.param("peer", x509.DNSName("mesh.example.internal"), id="peer leaf"),
]


@pytest.mark.parametrize(("kind", "subject"), SERVER_CASES)
def test_server_verifier_accepts_server_certificates(
    kind: str, subject: x509.DNSName | x509.IPAddress, services: Services
) -> None:
    issuing = services.keyring.active_issuer().certificate
    if kind == "init server":
        leaf = data_file_leaf(services, "server.pem")
    else:
        name = str(subject.value)
        leaf = enroll(services, kind, csr_pem(name, dns=(name,)), [name])

    chain = builder(services).build_server_verifier(subject).verify(leaf, [issuing])

    assert chain[0] == leaf
    assert chain[-1] == services.keyring.root().certificate


def test_trust_domain_comes_from_settings(settings: Settings, clock: FixedClock) -> None:
    settings = settings.model_copy(update={"trust_domain": "ca.example.org"})
    initialise(settings, InitOptions(admin_name="root-admin"), clock)

    admin = x509.load_pem_x509_certificates((settings.data_dir / "admin.pem").read_bytes())[0]

    assert uris(admin) == ["spiffe://ca.example.org/admin/root-admin"]


@pytest.mark.parametrize("value", ["Upper.Case", "", "a b", "x\n"])
def test_trust_domain_must_be_a_spiffe_trust_domain(value: str, tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="trust_domain"):
        Settings(data_dir=tmp_path, trust_domain=value, _env_file=None)


def test_a_client_cn_that_cannot_be_a_uri_segment_is_refused(services: Services) -> None:
    with pytest.raises(ProfileViolationError, match="URI SAN"):
        enroll(services, "client", csr_pem("jane@example.org"), ["jane@example.org"])


@pytest.mark.parametrize(
    "uri",
    [
        "spiffe://mintca.internal/admin/mallory",
        "spiffe://mintca.internal/operator/mallory",
        "SPIFFE://mintca.internal/auditor/mallory",
    ],
)
def test_a_token_cannot_mint_a_role_identity_into_a_client_certificate(
    uri: str, services: Services
) -> None:
    """Even a token that lists the URI: relying parties that authorise by SPIFFE ID would
    take the client certificate for an admin."""
    with pytest.raises(NameNotAllowedError, match="trust domain"):
        enroll(services, "client", csr_pem("m", uris=(uri,)), ["m", uri])


def test_server_and_peer_cn_only_csrs_keep_host_sans(services: Services) -> None:
    """Only clientAuth-only profiles get a caller URI; hosts keep their DNS SAN from the CN."""
    leaf = enroll(services, "peer", csr_pem("mesh.example.internal"), ["*.internal"])

    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.DNSName("mesh.example.internal")]
