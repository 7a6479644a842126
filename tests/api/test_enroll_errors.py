"""`POST /v1/certificates`: every bad input is a 4xx problem document and stores nothing (no
certificate row, no audit row, the token's use not spent); and what good inputs give."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.ca.issuance import BACKDATE
from app.clock import FixedClock
from app.config import Settings
from app.services.container import Services

pytestmark = pytest.mark.db

PKCS10 = "application/pkcs10"
PEM_CHAIN = "application/pem-certificate-chain"
TOKEN_TTL_SECONDS = 3600
# The token of every error row unless the row says otherwise: one use, server profile.
DEFAULT_TOKEN: dict[str, Any] = {
    "names": ["*.zone", "api.internal"],
    "profile": "server",
    "max_validity_days": 30,
    "ttl_seconds": TOKEN_TTL_SECONDS,
    "max_uses": 1,
}
UNSET: Any = object()


@dataclass
class Env:
    """What a row needs: the public client, the row's token, the clock and CSR helpers."""

    client: TestClient
    token: dict[str, Any]
    clock: FixedClock
    csrs: Any
    settings: Settings
    log: list[str] = field(default_factory=list)

    def headers(self, token: str | None = UNSET, scheme: str = "Bearer") -> dict[str, str]:
        secret = self.token["token"] if token is UNSET else token
        return {} if secret is None else {"Authorization": f"{scheme} {secret}"}

    def json(self, body: Any, *, token: str | None = UNSET) -> httpx.Response:
        return self.client.post("/v1/certificates", json=body, headers=self.headers(token))

    def raw(
        self,
        content: bytes | str,
        *,
        content_type: str | None = PKCS10,
        token: str | None = UNSET,
        scheme: str = "Bearer",
    ) -> httpx.Response:
        headers = self.headers(token, scheme)
        if content_type is not None:
            headers["Content-Type"] = content_type
        data = content.encode() if isinstance(content, str) else content
        return self.client.post("/v1/certificates", content=data, headers=headers)

    def csr(self, *names: str, key: Any = None, **kwargs: Any) -> str:
        """PEM CSR with CN = the first name and every name as a DNS SAN (or what kwargs say)."""
        if kwargs:
            return str(self.csrs.pem(self.csrs.build(key, **kwargs)))
        return str(self.csrs.pem_for(*names, key=key))

    def enroll_good(self, **body: Any) -> httpx.Response:
        return self.json({"csr": self.csr("a.zone"), **body})


@dataclass(frozen=True)
class Case:
    status: int
    slug: str
    send: Callable[[Env], httpx.Response]
    setup: Callable[[Env], None] | None = None
    token: dict[str, Any] = field(default_factory=dict)  # overrides of DEFAULT_TOKEN
    token_survives: bool = True  # the same token enrolls afterwards


def flipped_signature(env: Env, kind: str = "ec-p256") -> bytes:
    der = bytearray(env.csrs.der(env.csrs.build(env.csrs.new_key(kind), cn="a.zone")))
    der[-1] ^= 0x01  # the signature BIT STRING is the last field of the CSR
    return bytes(der)


def with_extension(extension: x509.ExtensionType, critical: bool = False) -> Callable[[Env], Any]:
    def send(env: Env) -> httpx.Response:
        csr = env.csrs.build(cn="a.zone", dns=["a.zone"], extensions=[(extension, critical)])
        return env.json({"csr": env.csrs.pem(csr)})

    return send


def with_key(kind: str) -> Callable[[Env], Any]:
    def send(env: Env) -> httpx.Response:
        return env.json({"csr": env.csr("a.zone", key=env.csrs.new_key(kind))})

    return send


def names(*requested: str, **kwargs: Any) -> Callable[[Env], Any]:
    def send(env: Env) -> httpx.Response:
        return env.json({"csr": env.csr(*requested, **kwargs)})

    return send


def spend_token(env: Env) -> None:
    response = env.enroll_good()
    assert response.status_code == 201, response.text


KEY_USAGE_CERT_SIGN = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)
KEY_USAGE_CRL_SIGN = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)
GARBAGE_PEM = (
    "-----BEGIN CERTIFICATE REQUEST-----\n%%%% not base64 at all %%%%\n"
    "-----END CERTIFICATE REQUEST-----\n"
)
NOT_A_CSR_PEM = (
    "-----BEGIN CERTIFICATE REQUEST-----\n"
    + base64.b64encode(b"0\x03\x02\x01\x00 this is no CSR").decode()
    + "\n-----END CERTIFICATE REQUEST-----\n"
)
MIB = 1024 * 1024

ERROR_CASES = [
    # --- the body itself ---
    pytest.param(
        Case(400, "malformed-csr", lambda e: e.raw(b"\x00\x01 garbage \xff")),
        id="body/garbage raw",
    ),
    pytest.param(
        Case(
            400, "invalid-request", lambda e: e.raw(b"{not json", content_type="application/json")
        ),
        id="body/garbage json",
    ),
    pytest.param(Case(400, "malformed-csr", lambda e: e.raw(b"")), id="body/empty raw"),
    pytest.param(
        Case(400, "malformed-csr", lambda e: e.raw(GARBAGE_PEM)), id="body/pem garbage inside raw"
    ),
    pytest.param(
        Case(400, "malformed-csr", lambda e: e.json({"csr": GARBAGE_PEM})),
        id="body/pem garbage inside json",
    ),
    pytest.param(
        Case(400, "malformed-csr", lambda e: e.json({"csr": NOT_A_CSR_PEM})),
        id="body/pem of base64 that is no csr",
    ),
    pytest.param(
        Case(
            400,
            "malformed-csr",
            lambda e: e.json({"csr": (e.settings.data_dir / "root.pem").read_text()}),
        ),
        id="body/a certificate instead of a csr",
    ),
    pytest.param(
        Case(
            400,
            "malformed-csr",
            lambda e: e.raw(e.csrs.der(e.csrs.build(cn="a.zone"))[:-40]),
        ),
        id="body/truncated der",
    ),
    pytest.param(
        Case(
            400,
            "malformed-csr",
            lambda e: e.raw(e.csrs.der(e.csrs.build(cn="a.zone")) + b"\x00trailing"),
        ),
        id="body/der with trailing bytes",
    ),
    pytest.param(Case(413, "payload-too-large", lambda e: e.raw(b"0" * MIB)), id="body/1 MiB raw"),
    pytest.param(
        Case(413, "payload-too-large", lambda e: e.json({"csr": "A" * MIB})), id="body/1 MiB json"
    ),
    pytest.param(
        Case(413, "payload-too-large", lambda e: e.raw(b"0" * (64 * 1024 + 1))),
        id="body/64 KiB plus one byte",
    ),
    # --- content type ---
    pytest.param(
        Case(
            415,
            "unsupported-media-type",
            lambda e: e.raw(e.csr("a.zone"), content_type="text/plain"),
        ),
        id="content type/text plain",
    ),
    pytest.param(
        Case(415, "unsupported-media-type", lambda e: e.raw(e.csr("a.zone"), content_type=None)),
        id="content type/none",
    ),
    pytest.param(
        Case(
            415,
            "unsupported-media-type",
            lambda e: e.raw("csr=x", content_type="application/x-www-form-urlencoded"),
        ),
        id="content type/form",
    ),
    # --- the JSON schema ---
    pytest.param(
        Case(400, "invalid-request", lambda e: e.json({"profile": "server"})), id="json/missing csr"
    ),
    pytest.param(
        Case(400, "invalid-request", lambda e: e.json({"csr": 5})), id="json/csr a number"
    ),
    pytest.param(
        Case(
            400,
            "invalid-request",
            lambda e: e.json({"csr": e.csr("a.zone"), "validity_days": "ten"}),
        ),
        id="json/validity_days text",
    ),
    pytest.param(
        Case(
            400, "invalid-request", lambda e: e.json({"csr": e.csr("a.zone"), "validity_days": 1.5})
        ),
        id="json/validity_days fractional",
    ),
    pytest.param(
        Case(
            400,
            "invalid-request",
            lambda e: e.json({"csr": e.csr("a.zone"), "profile": ["server"]}),
        ),
        id="json/profile a list",
    ),
    pytest.param(
        Case(400, "invalid-request", lambda e: e.json({"csr": e.csr("a.zone"), "admin": True})),
        id="json/unknown field",
    ),
    pytest.param(Case(400, "invalid-request", lambda e: e.json([])), id="json/an array"),
    pytest.param(
        Case(400, "invalid-request", lambda e: e.raw(b"null", content_type="application/json")),
        id="json/null",
    ),
    # --- the CSR ---
    pytest.param(
        Case(400, "csr-signature", lambda e: e.raw(flipped_signature(e))),
        id="csr/signature bit flipped ec",
    ),
    pytest.param(
        Case(400, "csr-signature", lambda e: e.raw(flipped_signature(e, "rsa-2048"))),
        id="csr/signature bit flipped rsa",
    ),
    pytest.param(Case(400, "unsupported-key", with_key("rsa-1024")), id="key/rsa 1024"),
    pytest.param(Case(400, "unsupported-key", with_key("rsa-2048-e3")), id="key/rsa e=3"),
    pytest.param(Case(400, "unsupported-key", with_key("ec-secp256k1")), id="key/ec secp256k1"),
    pytest.param(Case(400, "unsupported-key", with_key("dsa-2048")), id="key/dsa 2048"),
    pytest.param(Case(400, "unsupported-key", with_key("ed448")), id="key/ed448"),
    pytest.param(
        Case(
            400,
            "profile-violation",
            with_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True),
        ),
        id="csr/asks CA:TRUE",
    ),
    pytest.param(
        Case(400, "profile-violation", with_extension(KEY_USAGE_CERT_SIGN, critical=True)),
        id="csr/asks keyCertSign",
    ),
    pytest.param(
        Case(400, "profile-violation", with_extension(KEY_USAGE_CRL_SIGN, critical=True)),
        id="csr/asks cRLSign",
    ),
    pytest.param(
        Case(
            400,
            "profile-violation",
            with_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING])),
        ),
        id="csr/asks codeSigning",
    ),
    pytest.param(
        Case(
            400,
            "profile-violation",
            with_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])),
        ),
        id="csr/asks clientAuth of a server token",
    ),
    pytest.param(Case(400, "malformed-csr", names(cn=None)), id="csr/names nothing"),
    pytest.param(
        Case(
            400,
            "profile-violation",
            names(uris=["spiffe://zone/api"]),
            token={"names": ["a.zone", "spiffe://zone/api"]},
        ),
        id="csr/server profile without a host name",
    ),
    # --- names the token does not allow: 403 ---
    pytest.param(Case(403, "name-not-allowed", names("other.example")), id="names/outside"),
    pytest.param(
        Case(403, "name-not-allowed", names(cn="a.zone", dns=["a.zone", "evil.example"])),
        id="names/one san outside",
    ),
    pytest.param(Case(403, "name-not-allowed", names("xzone")), id="names/xzone"),
    pytest.param(Case(403, "name-not-allowed", names("zone.evil")), id="names/zone.evil"),
    pytest.param(Case(403, "name-not-allowed", names("a.zone.evil")), id="names/a.zone.evil"),
    pytest.param(Case(403, "name-not-allowed", names("zone")), id="names/zone itself"),
    pytest.param(Case(403, "name-not-allowed", names("a.zonex")), id="names/a.zonex"),
    pytest.param(
        Case(403, "name-not-allowed", names(dns=["*.a.zone"])), id="names/wildcard below the zone"
    ),
    pytest.param(
        Case(403, "name-not-allowed", names(dns=["*.zone"]), token={"names": ["a.zone", "b.zone"]}),
        id="names/wildcard *.zone not listed",
    ),
    pytest.param(
        Case(403, "name-not-allowed", names(cn="a.zone", ips=["10.0.0.1"])), id="names/ip outside"
    ),
    pytest.param(
        Case(403, "name-not-allowed", names(cn="a.zone", uris=["spiffe://zone/api"])),
        id="names/uri outside",
    ),
    pytest.param(
        Case(403, "name-not-allowed", names(cn="a.zone", emails=["ops@a.zone"])),
        id="names/email outside",
    ),
    # --- the token: 401 ---
    pytest.param(
        Case(
            401,
            "token-rejected",
            lambda e: e.enroll_good(),
            setup=spend_token,
            token_survives=False,
        ),
        id="token/used up",
    ),
    pytest.param(
        Case(
            401,
            "token-rejected",
            lambda e: e.enroll_good(),
            setup=lambda e: e.clock.advance(seconds=TOKEN_TTL_SECONDS + 60),
        ),
        id="token/expired",
    ),
    pytest.param(
        Case(
            401,
            "token-rejected",
            lambda e: e.enroll_good(),
            setup=lambda e: e.clock.advance(seconds=TOKEN_TTL_SECONDS),
        ),
        id="token/at its expiry instant",
    ),
    pytest.param(
        Case(401, "token-rejected", lambda e: e.json({"csr": e.csr("a.zone")}, token=None)),
        id="token/missing",
    ),
    pytest.param(
        Case(401, "token-rejected", lambda e: e.raw(e.csr("a.zone"), token=None)),
        id="token/missing raw",
    ),
    pytest.param(
        Case(
            401,
            "token-rejected",
            lambda e: e.json({"csr": e.csr("a.zone")}, token="mintca_" + "A" * 43),
        ),
        id="token/unknown",
    ),
    pytest.param(
        Case(401, "token-rejected", lambda e: e.json({"csr": e.csr("a.zone")}, token="")),
        id="token/empty bearer",
    ),
    pytest.param(
        Case(
            401,
            "token-rejected",
            lambda e: e.raw(e.csr("a.zone"), token=e.token["token"], scheme="Basic"),
        ),
        id="token/basic scheme",
    ),
    # --- profile and validity: 400, never clamped ---
    pytest.param(
        Case(400, "profile-violation", lambda e: e.enroll_good(profile="client")),
        id="profile/not in the token",
    ),
    pytest.param(
        Case(400, "profile-violation", lambda e: e.enroll_good(profile="nope")),
        id="profile/unknown",
    ),
    pytest.param(
        Case(400, "profile-violation", lambda e: e.enroll_good(profile="ocsp")),
        id="profile/ocsp",
    ),
    pytest.param(
        Case(400, "profile-violation", lambda e: e.enroll_good(validity_days=31)),
        id="validity/above the token max",
    ),
    pytest.param(
        Case(
            400,
            "profile-violation",
            lambda e: e.enroll_good(validity_days=398),
            token={"max_validity_days": None},
        ),
        id="validity/above the profile max",
    ),
    pytest.param(
        Case(400, "profile-violation", lambda e: e.enroll_good(validity_days=0)), id="validity/0"
    ),
    pytest.param(
        Case(400, "profile-violation", lambda e: e.enroll_good(validity_days=-5)),
        id="validity/negative",
    ),
    pytest.param(
        Case(400, "profile-violation", lambda e: e.enroll_good(validity_days=10**12)),
        id="validity/10**12 days",
    ),
]


def count(services: Services, table: str) -> int:
    with services.db.read() as session:
        return int(session.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def uses_left(services: Services, token_id: str) -> int:
    with services.db.read() as session:
        value = session.execute(
            text("SELECT uses_left FROM tokens WHERE id = :id"), {"id": token_id}
        ).scalar_one()
    return int(value)


@pytest.mark.parametrize("case", ERROR_CASES)
def test_bad_enrollment_is_a_problem_and_stores_nothing(
    case: Case,
    services: Services,
    public_client: TestClient,
    new_token: Callable[..., dict[str, Any]],
    clock: FixedClock,
    csrs: Any,
    problem: Callable[..., dict[str, Any]],
    initialised_settings: Settings,
) -> None:
    token = new_token(**{**DEFAULT_TOKEN, **case.token})
    env = Env(public_client, token, clock, csrs, initialised_settings)
    started_at = clock.now()
    if case.setup is not None:
        case.setup(env)
    before = {t: count(services, t) for t in ("certificates", "audit_log", "crls")}
    uses_before = uses_left(services, token["id"])

    response = case.send(env)

    problem(response, case.status, case.slug)
    after = {t: count(services, t) for t in ("certificates", "audit_log", "crls")}
    assert after == before, f"rows changed by a refused request: {before} -> {after}"
    assert uses_left(services, token["id"]) == uses_before, "a refused request spent a use"
    if case.token_survives:
        clock.advance(seconds=-(clock.now() - started_at).total_seconds())
        retry = env.enroll_good()
        assert retry.status_code == 201, f"the token did not survive: {retry.text}"
        assert uses_left(services, token["id"]) == 0


# --- What good requests give ----------------------------------------------------------------------


def issued(response: httpx.Response) -> x509.Certificate:
    assert response.status_code == 201, response.text
    return x509.load_pem_x509_certificate(response.json()["certificate"].encode())


def dns_names(certificate: x509.Certificate) -> list[str]:
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.DNSName)


def bearer(token: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token['token']}"}


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        pytest.param(["a.zone"], ["a.zone"], id="one label"),
        pytest.param(["a.b.zone"], ["a.b.zone"], id="two labels"),
        pytest.param(["a.zone", "x.y.z.zone"], ["a.zone", "x.y.z.zone"], id="several"),
        pytest.param(["A.B.Zone"], ["a.b.zone"], id="uppercase, normalised"),
    ],
)
def test_suffix_pattern_allows_names_below_the_zone(
    requested: list[str],
    expected: list[str],
    public_client: TestClient,
    new_token: Callable[..., dict[str, Any]],
    csrs: Any,
) -> None:
    token = new_token(names=["*.zone"])
    csr = csrs.build(dns=requested)

    certificate = issued(
        public_client.post("/v1/certificates", json={"csr": csrs.pem(csr)}, headers=bearer(token))
    )

    assert dns_names(certificate) == expected


def test_exact_wildcard_in_token_allows_the_wildcard_name(
    public_client: TestClient, new_token: Callable[..., dict[str, Any]], csrs: Any
) -> None:
    token = new_token(names=["*.zone"], profile="server")
    csr = csrs.build(cn="*.zone", dns=["*.zone"])

    certificate = issued(
        public_client.post("/v1/certificates", json={"csr": csrs.pem(csr)}, headers=bearer(token))
    )

    assert dns_names(certificate) == ["*.zone"]


def test_token_without_profile_enrolls_with_peer(
    public_client: TestClient, new_token: Callable[..., dict[str, Any]], csrs: Any
) -> None:
    token = new_token(names=["a.zone"])

    response = public_client.post(
        "/v1/certificates", json={"csr": csrs.pem_for("a.zone")}, headers=bearer(token)
    )

    certificate = issued(response)
    assert response.json()["profile"] == "peer", response.text
    eku = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}


@pytest.mark.parametrize(
    ("token_max", "requested", "expected_days"),
    [
        pytest.param(None, None, 30, id="profile default"),
        pytest.param(10, None, 10, id="default within the token max"),
        pytest.param(None, 7, 7, id="requested"),
        pytest.param(30, 30, 30, id="exactly the token max"),
        pytest.param(None, 397, 397, id="exactly the profile max"),
    ],
)
def test_validity(
    token_max: int | None,
    requested: int | None,
    expected_days: int,
    public_client: TestClient,
    new_token: Callable[..., dict[str, Any]],
    csrs: Any,
    clock: FixedClock,
) -> None:
    token = new_token(names=["a.zone"], profile="server", max_validity_days=token_max)
    body: dict[str, Any] = {"csr": csrs.pem_for("a.zone")}
    if requested is not None:
        body["validity_days"] = requested

    certificate = issued(public_client.post("/v1/certificates", json=body, headers=bearer(token)))

    now = clock.now()
    assert certificate.not_valid_before_utc == now - BACKDATE
    assert certificate.not_valid_after_utc == now + timedelta(days=expected_days)


def legacy(pem: str) -> str:
    return pem.replace("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST")


def text_around(pem: str) -> str:
    return f"Certificate request for a.zone\nSubject: CN=a.zone\n\n{pem}\n-- made by hand\n"


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(lambda csr, c: c.pem(csr), id="pem"),
        pytest.param(lambda csr, c: text_around(c.pem(csr)), id="pem with text around"),
        pytest.param(lambda csr, c: legacy(c.pem(csr)), id="legacy NEW CERTIFICATE REQUEST"),
        pytest.param(
            lambda csr, c: text_around(legacy(c.pem(csr))), id="legacy label with text around"
        ),
        pytest.param(lambda csr, c: c.pem(csr).replace("\n", "\r\n"), id="pem with CRLF"),
    ],
)
@pytest.mark.parametrize("transport", ["json", "raw"])
def test_pem_forms(
    encode: Callable[[x509.CertificateSigningRequest, Any], str],
    transport: str,
    public_client: TestClient,
    new_token: Callable[..., dict[str, Any]],
    csrs: Any,
) -> None:
    token = new_token(names=["a.zone"])
    csr = csrs.build(cn="a.zone")
    body = encode(csr, csrs)

    if transport == "json":
        response = public_client.post("/v1/certificates", json={"csr": body}, headers=bearer(token))
        certificate = issued(response)
    else:
        response = public_client.post(
            "/v1/certificates",
            content=body.encode(),
            headers={**bearer(token), "Content-Type": PKCS10},
        )
        assert response.status_code == 201, response.text
        certificate = x509.load_pem_x509_certificates(response.content)[0]

    assert certificate.public_key() == csr.public_key()


def test_der_raw_body(
    public_client: TestClient, new_token: Callable[..., dict[str, Any]], csrs: Any
) -> None:
    token = new_token(names=["a.zone"])
    csr = csrs.build(cn="a.zone")

    response = public_client.post(
        "/v1/certificates",
        content=csrs.der(csr),
        headers={**bearer(token), "Content-Type": "application/pkcs10; charset=binary"},
    )

    assert response.status_code == 201, response.text
    assert x509.load_pem_x509_certificates(response.content)[0].public_key() == csr.public_key()


def ca_chain(settings: Settings) -> list[x509.Certificate]:
    """The data dir's ca-chain.pem: issuing CA, then root."""
    return x509.load_pem_x509_certificates((settings.data_dir / "ca-chain.pem").read_bytes())


def test_json_answer_shape(
    public_client: TestClient,
    new_token: Callable[..., dict[str, Any]],
    csrs: Any,
    initialised_settings: Settings,
) -> None:
    token = new_token(names=["a.zone"], profile="client")
    csr = csrs.build(cn="a.zone")

    response = public_client.post(
        "/v1/certificates", json={"csr": csrs.pem(csr), "profile": "client"}, headers=bearer(token)
    )

    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"serial", "certificate", "chain", "not_before", "not_after", "profile"}
    certificate = x509.load_pem_x509_certificate(body["certificate"].encode())
    chain = [x509.load_pem_x509_certificate(p.encode()) for p in body["chain"]]
    issuing, root = ca_chain(initialised_settings)
    assert chain == [issuing, root], "chain must be [issuing CA, root]"
    certificate.verify_directly_issued_by(issuing)
    assert body["serial"] == format(certificate.serial_number, "x")
    assert datetime.fromisoformat(body["not_before"]) == certificate.not_valid_before_utc
    assert datetime.fromisoformat(body["not_after"]) == certificate.not_valid_after_utc
    assert body["profile"] == "client"
    assert certificate.public_key() == csr.public_key()


def test_raw_answer_is_a_pem_chain_of_three(
    public_client: TestClient,
    new_token: Callable[..., dict[str, Any]],
    csrs: Any,
    initialised_settings: Settings,
) -> None:
    token = new_token(names=["a.zone"])
    csr = csrs.build(cn="a.zone")

    response = public_client.post(
        "/v1/certificates",
        content=csrs.pem(csr).encode(),
        headers={**bearer(token), "Content-Type": PKCS10},
    )

    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith(PEM_CHAIN), response.headers
    leaf, *chain = x509.load_pem_x509_certificates(response.content)
    assert chain == ca_chain(initialised_settings), "leaf, then issuing CA, then root"
    assert response.text.count("-----BEGIN CERTIFICATE-----") == 3
    leaf.verify_directly_issued_by(chain[0])
    assert leaf.public_key() == csr.public_key()


def test_enrollment_is_committed_and_audited(
    services: Services,
    public_client: TestClient,
    admin_client: TestClient,
    new_token: Callable[..., dict[str, Any]],
    csrs: Any,
) -> None:
    token = new_token(names=["a.zone"], profile="server")

    response = public_client.post(
        "/v1/certificates", json={"csr": csrs.pem_for("a.zone")}, headers=bearer(token)
    )

    assert response.status_code == 201, response.text
    serial = response.json()["serial"]
    status = public_client.get(f"/v1/certificates/{serial}/status")
    assert status.status_code == 200, status.text
    assert status.json()["status"] == "good", status.text
    assert uses_left(services, token["id"]) == 0
    with services.db.read() as session:
        row = session.execute(
            text("SELECT profile, token_id, der FROM certificates WHERE serial = :s"), {"s": serial}
        ).one()
    assert row.profile == "server"
    assert row.token_id == token["id"]
    assert bytes(row.der) == issued(response).public_bytes(Encoding.DER)
    audit = admin_client.get("/admin/audit")
    assert audit.status_code == 200, audit.text
    issues = [
        e
        for e in audit.json()["items"]
        if e["action"] == "certificate.issue" and e["target"] == serial
    ]
    assert len(issues) == 1, audit.text
    assert issues[0]["actor"] == f"token:{token['id']}"
    assert issues[0]["details"]["profile"] == "server"
    assert issues[0]["details"]["names"] == ["a.zone"]
