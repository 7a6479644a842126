"""The admin API on the mtls app: who gets in (only a valid, known, unrevoked admin
certificate), tokens, the certificate list, revocation and holds, and the audit log."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.api.apps import create_mtls_app
from app.clock import FixedClock
from app.config import Settings
from app.server.tls_scope import TLSScopeApp
from app.services.container import Services
from app.services.setup import InitReport

pytestmark = pytest.mark.db

RFC5280_REASONS = [
    "unspecified",
    "keyCompromise",
    "cACompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "certificateHold",
    "privilegeWithdrawn",
    "aACompromise",
]
DETAIL_KEYS = {
    "serial",
    "ca_id",
    "profile",
    "common_name",
    "names",
    "status",
    "not_before",
    "not_after",
    "created_at",
    "revoked_at",
    "reason",
    "invalidity_date",
    "pem",
}
Problem = Callable[..., dict[str, Any]]
UNREADABLE_PEM = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"


def pem_of(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(Encoding.PEM).decode()


def issue(
    services: Services,
    csrs: Any,
    name: str = "a.zone",
    *,
    profile: str = "peer",
    days: int | None = None,
) -> x509.Certificate:
    """A certificate issued through the enrollment service (the HTTP path is tested elsewhere)."""
    created = services.tokens.create(
        actor="test",
        profiles=[profile],
        names=[name],
        ttl=timedelta(hours=1),
        max_uses=1,
        max_validity_days=None,
    )
    return services.enrollment.enroll(
        token=created.token, csr_data=csrs.pem_for(name), profile=profile, validity_days=days
    ).certificate


def serial_of(certificate: x509.Certificate) -> str:
    return format(certificate.serial_number, "x")


def rows(services: Services, sql: str, **params: Any) -> list[Any]:
    with services.db.read() as session:
        return list(session.execute(text(sql), params).all())


# --- Tokens ---------------------------------------------------------------------------------------


def test_token_answer_shape_and_stored_hash_only(
    admin_client: TestClient, services: Services, clock: FixedClock
) -> None:
    response = admin_client.post(
        "/admin/tokens",
        json={
            "profile": "server",
            "names": ["*.zone", "10.0.0.1"],
            "ttl_seconds": 600,
            "max_uses": 2,
            "max_validity_days": 10,
        },
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"token", "id", "expires_at"}, body
    secret = body["token"]
    assert secret.startswith("mintca_"), secret[:12]
    assert len(secret) >= 40, len(secret)
    assert datetime.fromisoformat(body["expires_at"]) == clock.now() + timedelta(seconds=600)
    (row,) = rows(services, "SELECT * FROM tokens WHERE id = :id", id=body["id"])
    stored = row._mapping
    assert stored["secret_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert stored["uses_left"] == 2
    assert stored["max_uses"] == 2
    assert stored["max_validity_days"] == 10
    secret_body = secret.removeprefix("mintca_")
    everything = [
        *rows(services, "SELECT * FROM tokens"),
        *rows(services, "SELECT * FROM audit_log"),
    ]
    for stored_row in everything:
        for value in stored_row:
            flat = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            assert secret_body not in flat, f"the token secret is stored: {stored_row}"


def test_token_defaults(admin_client: TestClient, services: Services, clock: FixedClock) -> None:
    response = admin_client.post("/admin/tokens", json={"names": ["a.zone"]})

    assert response.status_code == 201, response.text
    body = response.json()
    assert datetime.fromisoformat(body["expires_at"]) == clock.now() + timedelta(hours=1)
    (row,) = rows(services, "SELECT profiles, max_uses FROM tokens WHERE id = :id", id=body["id"])
    assert row.max_uses == 1
    assert "peer" in str(row.profiles)


# --- Bad admin requests: 4xx problems, nothing stored ---------------------------------------------


def good_serial(services: Services, csrs: Any) -> str:
    return serial_of(issue(services, csrs))


TOKENS = "/admin/tokens"
LIST = "/admin/certificates"
REVOKE = "/admin/certificates/{serial}/revoke"
UNHOLD = "/admin/certificates/{serial}/unhold"
NEVER = "5a" * 19  # a serial never issued
PAST, FUTURE = "2020-01-01T00:00:00Z", "2999-01-01T00:00:00Z"


def token(**fields: Any) -> dict[str, Any]:
    return {"names": ["a.zone"], **fields}


def reason(name: Any, **fields: Any) -> dict[str, Any]:
    return {"reason": name, **fields}


ADMIN_REQUEST_ERRORS = [
    # tokens
    pytest.param("POST", TOKENS, token(profile="nope"), 400, id="token/unknown profile"),
    pytest.param("POST", TOKENS, token(profile="ocsp"), 400, id="token/ocsp profile"),
    pytest.param("POST", TOKENS, token(profile=["server", "ocsp"]), 400, id="token/ocsp in a set"),
    pytest.param("POST", TOKENS, {"names": ["foo.*.com"]}, 400, id="token/pattern foo.*.com"),
    pytest.param("POST", TOKENS, {"names": ["*"]}, 400, id="token/pattern *"),
    pytest.param("POST", TOKENS, {"names": ["*."]}, 400, id="token/pattern *."),
    pytest.param("POST", TOKENS, {"names": ["*.*.zone"]}, 400, id="token/pattern *.*.zone"),
    pytest.param("POST", TOKENS, {"names": ["a.*"]}, 400, id="token/pattern a.*"),
    pytest.param("POST", TOKENS, {"names": [""]}, 400, id="token/empty name"),
    pytest.param("POST", TOKENS, {"names": ["a zone"]}, 400, id="token/name with a space"),
    pytest.param("POST", TOKENS, {"names": []}, 400, id="token/no names"),
    pytest.param("POST", TOKENS, {"profile": "server"}, 400, id="token/names missing"),
    pytest.param("POST", TOKENS, {"names": "a.zone"}, 400, id="token/names not a list"),
    pytest.param("POST", TOKENS, token(ttl_seconds=0), 400, id="token/ttl 0"),
    pytest.param("POST", TOKENS, token(ttl_seconds=-60), 400, id="token/ttl negative"),
    pytest.param("POST", TOKENS, token(ttl_seconds=30 * 86400 + 1), 400, id="token/ttl > 30 d"),
    pytest.param("POST", TOKENS, token(ttl_seconds=10**20), 400, id="token/ttl 10**20"),
    pytest.param("POST", TOKENS, token(max_uses=0), 400, id="token/max_uses 0"),
    pytest.param("POST", TOKENS, token(max_validity_days=0), 400, id="token/max validity 0"),
    pytest.param(
        "POST",
        TOKENS,
        token(profile="server", max_validity_days=398),
        400,
        id="token/max validity above the profile's",
    ),
    pytest.param("POST", TOKENS, token(secret="x"), 400, id="token/unknown field"),
    pytest.param("POST", TOKENS, b"{not json", 400, id="token/garbage body"),
    pytest.param("POST", TOKENS, b'{"names": ["' + b"a" * 2**20 + b'"]}', 413, id="token/1 MiB"),
    # listing
    pytest.param("GET", LIST + "?status=valid", None, 400, id="list/unknown status"),
    pytest.param("GET", LIST + "?limit=0", None, 400, id="list/limit 0"),
    pytest.param("GET", LIST + "?limit=1001", None, 400, id="list/limit 1001"),
    pytest.param("GET", LIST + "?limit=ten", None, 400, id="list/limit text"),
    pytest.param("GET", LIST + "?expiring_within_days=-1", None, 400, id="list/expiring -1"),
    pytest.param("GET", LIST + "?cursor=" + "f" * 41, None, 400, id="list/cursor too long"),
    # one certificate
    pytest.param("GET", LIST + "/xyz", None, 400, id="show/non-hex serial"),
    pytest.param("GET", LIST + "/" + NEVER, None, 404, id="show/never issued"),
    # revocation
    pytest.param("POST", REVOKE, reason("removeFromCRL"), 400, id="revoke/removeFromCRL"),
    pytest.param("POST", REVOKE, reason("1"), 400, id="revoke/reason '1'"),
    pytest.param("POST", REVOKE, reason(1), 400, id="revoke/reason 1"),
    pytest.param("POST", REVOKE, reason("KeyCompromise"), 400, id="revoke/reason wrong case"),
    pytest.param("POST", REVOKE, reason("key_compromise"), 400, id="revoke/python enum name"),
    pytest.param("POST", REVOKE, reason(""), 400, id="revoke/empty reason"),
    pytest.param("POST", REVOKE, {}, 400, id="revoke/reason missing"),
    pytest.param(
        "POST",
        REVOKE,
        reason("keyCompromise", invalidity_date=PAST.rstrip("Z")),
        400,
        id="revoke/naive invalidity date",
    ),
    pytest.param(
        "POST",
        REVOKE,
        reason("keyCompromise", invalidity_date="yesterday"),
        400,
        id="revoke/invalidity date text",
    ),
    pytest.param(
        "POST",
        REVOKE,
        reason("keyCompromise", invalidity_date=FUTURE),
        400,
        id="revoke/invalidity date in the future",
    ),
    pytest.param(
        "POST",
        REVOKE.replace("{serial}", NEVER),
        reason("superseded"),
        404,
        id="revoke/never issued",
    ),
    pytest.param(
        "POST", REVOKE.replace("{serial}", "zz"), reason("superseded"), 400, id="revoke/non-hex"
    ),
    pytest.param("POST", UNHOLD, None, 409, id="unhold/not on hold"),
    pytest.param("POST", UNHOLD.replace("{serial}", NEVER), None, 404, id="unhold/never issued"),
    # audit
    pytest.param("GET", "/admin/audit?limit=0", None, 400, id="audit/limit 0"),
    pytest.param("GET", "/admin/audit?before_id=" + "9" * 30, None, 400, id="audit/before_id huge"),
    pytest.param("GET", "/admin/audit?cursor=" + "9" * 30, None, 400, id="audit/cursor huge"),
    pytest.param("GET", "/admin/audit?cursor=abc", None, 400, id="audit/cursor not a number"),
    pytest.param("GET", "/admin/audit?since=yesterday", None, 400, id="audit/since not a time"),
    pytest.param("GET", "/admin/audit/chain?after_id=-1", None, 400, id="audit/chain after_id < 0"),
]


@pytest.mark.parametrize(("method", "path", "body", "status"), ADMIN_REQUEST_ERRORS)
def test_bad_admin_request_is_a_problem_and_changes_nothing(
    method: str,
    path: str,
    body: Any,
    status: int,
    admin_client: TestClient,
    services: Services,
    csrs: Any,
    problem: Problem,
) -> None:
    serial = good_serial(services, csrs)
    counts = (
        "SELECT (SELECT count(*) FROM tokens), (SELECT count(*) FROM audit_log),"
        " (SELECT count(*) FROM crls)"
    )
    before = rows(services, counts)
    request: dict[str, Any] = {}
    if isinstance(body, bytes):
        request = {"content": body, "headers": {"Content-Type": "application/json"}}
    elif body is not None or method == "POST":  # writes are JSON only (CSRF guard)
        request = {"json": body if body is not None else {}}

    response = admin_client.request(method, path.format(serial=serial), **request)

    problem(response, status)
    assert rows(services, counts) == before, "a refused admin request changed rows"
    assert admin_client.get(f"/admin/certificates/{serial}").json()["status"] == "good"


# --- Who gets in ----------------------------------------------------------------------------------


def every_admin_request(serial: str) -> list[tuple[str, str, Any]]:
    """One request per /admin route of the mtls app (taken from the app, so a new route is
    covered without editing this list), with a body that would be valid for an admin."""
    bodies = {
        "/admin/tokens": {"names": ["a.zone"]},
        "/admin/certificates/{serial}/revoke": {"reason": "keyCompromise"},
        "/admin/cas/rotate": {},
    }
    app = create_mtls_app(object())  # type: ignore[arg-type]  # routes only
    try:  # FastAPI 0.16x keeps included routers as lazy entries of app.routes
        from fastapi.routing import iter_route_contexts
    except ImportError:
        routes: list[Any] = list(app.routes)
    else:
        routes = list(iter_route_contexts(app.routes))
    requests = []
    for route in routes:
        if not route.path.startswith("/admin"):
            continue
        for method in sorted(getattr(route, "methods", None) or ()):
            if method != "HEAD":
                body = bodies.get(route.path) if method == "POST" else None
                requests.append((method, route.path.replace("{serial}", serial), body))
    return requests


@pytest.fixture
def peers(
    services: Services,
    csrs: Any,
    admin_client: TestClient,
    initialised_settings: Settings,
    admin_pem: str,
    clock: FixedClock,
) -> dict[str, Callable[[], TestClient]]:
    """Ways to arrive at the mtls app without a usable admin certificate."""
    app = create_mtls_app(services)

    def presenting(tls: dict[str, Any] | None) -> TestClient:
        return TestClient(app if tls is None else TLSScopeApp(app, tls))

    def with_cert(cert_pem: str) -> TestClient:
        return presenting({"client_cert_chain": [cert_pem]})

    def new_admin_then(reason: str | None) -> TestClient:
        certificate = issue(services, csrs, "second-admin", profile="admin")
        client = with_cert(pem_of(certificate))
        assert client.get("/admin/cas").status_code == 200, "a second admin works at first"
        if reason is not None:
            response = admin_client.post(
                f"/admin/certificates/{serial_of(certificate)}/revoke", json={"reason": reason}
            )
            assert response.status_code == 200, response.text
        return client

    def foreign(serial_number: int | None, subject: str = "admin") -> TestClient:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        now = clock.now()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Evil CA")]))
            .public_key(key.public_key())
            .serial_number(serial_number or x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .sign(key, hashes.SHA256())
        )
        return with_cert(pem_of(certificate))

    def expired_admin() -> TestClient:
        client = with_cert(admin_pem)
        clock.advance(days=366)
        return client

    server_leaf = x509.load_pem_x509_certificates(
        (initialised_settings.data_dir / "server.pem").read_bytes()
    )[0]
    admin_serial = x509.load_pem_x509_certificate(admin_pem.encode()).serial_number
    return {
        "no tls extension": lambda: presenting(None),
        "empty certificate chain": lambda: presenting({"client_cert_chain": []}),
        "unreadable certificate": lambda: with_cert(UNREADABLE_PEM),
        "client profile": lambda: with_cert(pem_of(issue(services, csrs, profile="client"))),
        "peer profile": lambda: with_cert(pem_of(issue(services, csrs, profile="peer"))),
        "the mtls server certificate": lambda: with_cert(pem_of(server_leaf)),
        "unknown (self-made CA)": lambda: foreign(None),
        "forged copy of the admin serial": lambda: foreign(admin_serial),
        "revoked admin": lambda: new_admin_then("keyCompromise"),
        "admin on hold": lambda: new_admin_then("certificateHold"),
        "expired admin": expired_admin,
    }


@pytest.mark.parametrize(
    ("peer", "slug"),
    [
        pytest.param("no tls extension", "peer-rejected", id="no certificate"),
        pytest.param("empty certificate chain", "peer-rejected", id="empty chain"),
        pytest.param("unreadable certificate", "peer-rejected", id="unreadable"),
        pytest.param("client profile", "forbidden", id="client profile"),
        pytest.param("peer profile", "forbidden", id="peer profile"),
        pytest.param("the mtls server certificate", "forbidden", id="server certificate"),
        pytest.param("unknown (self-made CA)", "peer-rejected", id="unknown"),
        pytest.param("forged copy of the admin serial", "peer-rejected", id="forged serial"),
        pytest.param("revoked admin", "peer-rejected", id="revoked admin"),
        pytest.param("admin on hold", "peer-rejected", id="admin on hold"),
        pytest.param("expired admin", "peer-rejected", id="expired admin"),
    ],
)
def test_every_admin_route_refuses(
    peer: str,
    slug: str,
    peers: dict[str, Callable[[], TestClient]],
    services: Services,
    csrs: Any,
    problem: Problem,
) -> None:
    target = good_serial(services, csrs)
    requests = every_admin_request(target)
    assert len(requests) >= 7, requests
    client = peers[peer]()
    audit_before = rows(services, "SELECT count(*) FROM audit_log")

    with client:
        for method, path, body in requests:
            response = client.request(method, path, json=body)
            try:
                problem(response, 403, slug)
            except AssertionError as exc:
                raise AssertionError(f"{method} {path}: {exc}") from None

    assert rows(services, "SELECT count(*) FROM audit_log") == audit_before
    assert rows(services, "SELECT revoked_at FROM certificates WHERE serial = :s", s=target) == [
        (None,)
    ]


def test_unheld_admin_gets_back_in(
    services: Services,
    csrs: Any,
    admin_client: TestClient,
    mtls_client_for: Callable[[str], TestClient],
) -> None:
    certificate = issue(services, csrs, "second-admin", profile="admin")
    serial = serial_of(certificate)
    client = mtls_client_for(pem_of(certificate))
    admin_client.post(f"/admin/certificates/{serial}/revoke", json={"reason": "certificateHold"})
    assert client.get("/admin/cas").status_code == 403

    assert admin_client.post(f"/admin/certificates/{serial}/unhold", json={}).status_code == 200

    assert client.get("/admin/cas").status_code == 200


# --- Listing --------------------------------------------------------------------------------------


@pytest.fixture
def population(services: Services, csrs: Any) -> dict[str, str]:
    """Eight issued certificates besides init's admin and server ones."""
    made = {
        "one": serial_of(issue(services, csrs, "one.zone", profile="server", days=1)),
        "two": serial_of(issue(services, csrs, "two.zone", profile="client", days=10)),
        "three": serial_of(issue(services, csrs, "three.zone", profile="peer", days=30)),
    }
    for i in range(5):
        made[f"bulk{i}"] = serial_of(issue(services, csrs, f"bulk-{i}.zone", days=30))
    return made


def listing(client: TestClient, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/admin/certificates", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"items", "next_cursor"}, body
    return list(body["items"])


def serials(items: list[dict[str, Any]]) -> set[str]:
    return {item["serial"] for item in items}


def test_list_everything(
    admin_client: TestClient, population: dict[str, str], services: Services
) -> None:
    items = listing(admin_client)

    assert len(items) == 10
    assert serials(items) == {r.serial for r in rows(services, "SELECT serial FROM certificates")}
    assert all(set(item) == DETAIL_KEYS for item in items), items[0]
    assert [i["serial"] for i in items] == sorted(i["serial"] for i in items), "stable order"


def test_list_filters(
    admin_client: TestClient,
    population: dict[str, str],
    initialised_report: InitReport,
    clock: FixedClock,
) -> None:
    p = population
    bulk = {p[f"bulk{i}"] for i in range(5)}
    issuing, root = initialised_report.issuing_ca_id, initialised_report.root_ca_id

    assert serials(listing(admin_client, q="bulk")) == bulk
    assert serials(listing(admin_client, q="ONE.ZONE")) == {p["one"]}, "q ignores case"
    assert serials(listing(admin_client, q="nothing-like-this")) == set()
    assert serials(listing(admin_client, profile="client")) == {p["two"]}
    assert len(listing(admin_client, profile="admin")) == 1
    assert len(listing(admin_client, ca_id=issuing)) == 10
    assert listing(admin_client, ca_id=root) == []
    assert serials(listing(admin_client, expiring_within_days=5)) == {p["one"]}
    assert serials(listing(admin_client, expiring_within_days=15)) == {p["one"], p["two"]}
    assert listing(admin_client, expiring_within_days=0) == [], "nothing expires within 0 days"
    assert len(listing(admin_client, status="good")) == 10
    assert listing(admin_client, status="revoked") == []

    revoked = admin_client.post(
        f"/admin/certificates/{p['three']}/revoke", json={"reason": "superseded"}
    )
    assert revoked.status_code == 200, revoked.text
    assert serials(listing(admin_client, status="revoked")) == {p["three"]}
    assert len(listing(admin_client, status="good")) == 9
    assert serials(listing(admin_client, status="good", profile="peer", q="bulk")) == bulk

    clock.advance(days=2)  # "one" (1 day) expires
    assert serials(listing(admin_client, status="expired")) == {p["one"]}
    assert p["one"] not in serials(listing(admin_client, status="good"))
    assert p["one"] not in serials(listing(admin_client, expiring_within_days=30))
    assert [i["status"] for i in listing(admin_client, q="one.zone")] == ["expired"]


@pytest.mark.parametrize("limit", [1, 3, 5, 10, 11, 1000])
def test_list_pagination_covers_everything_once(
    limit: int, admin_client: TestClient, population: dict[str, str]
) -> None:
    everything = [i["serial"] for i in listing(admin_client)]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0

    while True:
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        response = admin_client.get("/admin/certificates", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= limit
        seen.extend(i["serial"] for i in page["items"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert page["items"], "a page with a cursor must not be empty"
        assert pages <= 20, "pagination does not end"

    assert seen == everything, "every certificate exactly once, in order"
    assert pages == max(1, -(-len(everything) // limit))


def test_list_pagination_with_a_filter(
    admin_client: TestClient, population: dict[str, str]
) -> None:
    first = admin_client.get("/admin/certificates", params={"q": "bulk", "limit": 2}).json()
    second = admin_client.get(
        "/admin/certificates", params={"q": "bulk", "limit": 2, "cursor": first["next_cursor"]}
    ).json()
    third = admin_client.get(
        "/admin/certificates", params={"q": "bulk", "limit": 2, "cursor": second["next_cursor"]}
    ).json()

    got = [i["serial"] for page in (first, second, third) for i in page["items"]]
    assert sorted(got) == sorted(population[f"bulk{i}"] for i in range(5))
    assert len(set(got)) == 5
    assert third["next_cursor"] is None


# --- One certificate ------------------------------------------------------------------------------


def test_show_certificate_has_pem(
    admin_client: TestClient, services: Services, csrs: Any, initialised_report: InitReport
) -> None:
    certificate = issue(services, csrs, "shown.zone", profile="server")
    serial = serial_of(certificate)

    response = admin_client.get(f"/admin/certificates/{serial.upper()}")

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == DETAIL_KEYS, body
    assert x509.load_pem_x509_certificate(body["pem"].encode()) == certificate
    assert body["serial"] == serial
    assert body["ca_id"] == initialised_report.issuing_ca_id
    assert body["profile"] == "server"
    assert body["common_name"] == "shown.zone"
    assert body["names"] == ["shown.zone"]
    assert body["status"] == "good"
    assert datetime.fromisoformat(body["not_after"]) == certificate.not_valid_after_utc


# --- Revocation -----------------------------------------------------------------------------------


def revoke(client: TestClient, serial: str, reason: str, **extra: Any) -> httpx.Response:
    return client.post(f"/admin/certificates/{serial}/revoke", json={"reason": reason, **extra})


@pytest.mark.parametrize("reason", RFC5280_REASONS)
def test_every_rfc5280_reason_is_accepted(
    reason: str, admin_client: TestClient, services: Services, csrs: Any, clock: FixedClock
) -> None:
    serial = good_serial(services, csrs)

    response = revoke(admin_client, serial, reason)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "revoked"
    assert body["reason"] == reason
    assert datetime.fromisoformat(body["revoked_at"]) == clock.now()
    assert admin_client.get(f"/admin/certificates/{serial}").json()["reason"] == reason


@pytest.mark.parametrize(
    ("first", "second", "status"),
    [
        pytest.param("keyCompromise", "keyCompromise", 409, id="final then same"),
        pytest.param("superseded", "keyCompromise", 409, id="final then another final"),
        pytest.param("certificateHold", "certificateHold", 409, id="hold then hold"),
        pytest.param("certificateHold", "keyCompromise", 200, id="hold then final"),
        pytest.param("certificateHold", "unspecified", 200, id="hold then unspecified"),
    ],
)
def test_revoking_again(
    first: str,
    second: str,
    status: int,
    admin_client: TestClient,
    services: Services,
    csrs: Any,
    clock: FixedClock,
    problem: Problem,
) -> None:
    serial = good_serial(services, csrs)
    assert revoke(admin_client, serial, first).status_code == 200
    first_at = clock.now()
    clock.advance(hours=1)

    response = revoke(admin_client, serial, second)

    shown = admin_client.get(f"/admin/certificates/{serial}").json()
    if status == 409:
        problem(response, 409, "conflict")
        assert shown["reason"] == first, "a refused revocation changed the reason"
    else:
        assert response.status_code == 200, response.text
        assert shown["reason"] == second
        assert shown["status"] == "revoked"
        assert datetime.fromisoformat(shown["revoked_at"]) == first_at, "the hold's date stays"
        problem(revoke(admin_client, serial, "keyCompromise"), 409, "conflict")
        problem(admin_client.post(f"/admin/certificates/{serial}/unhold", json={}), 409, "conflict")


def test_unhold(admin_client: TestClient, services: Services, csrs: Any, problem: Problem) -> None:
    serial = good_serial(services, csrs)
    problem(admin_client.post(f"/admin/certificates/{serial}/unhold", json={}), 409, "conflict")
    assert revoke(admin_client, serial, "certificateHold").status_code == 200

    response = admin_client.post(f"/admin/certificates/{serial}/unhold", json={})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "good", body
    assert body["revoked_at"] is None
    assert body["reason"] is None
    problem(admin_client.post(f"/admin/certificates/{serial}/unhold", json={}), 409, "conflict")
    assert revoke(admin_client, serial, "keyCompromise").status_code == 200, "revocable again"


def test_invalidity_date_is_stored(
    admin_client: TestClient, services: Services, csrs: Any, clock: FixedClock
) -> None:
    serial = good_serial(services, csrs)
    compromised = (clock.now() - timedelta(days=3)).astimezone(UTC)

    response = revoke(
        admin_client, serial, "keyCompromise", invalidity_date=compromised.isoformat()
    )

    assert response.status_code == 200, response.text
    assert datetime.fromisoformat(response.json()["invalidity_date"]) == compromised
    shown = admin_client.get(f"/admin/certificates/{serial}").json()
    assert datetime.fromisoformat(shown["invalidity_date"]) == compromised
    (row,) = rows(services, "SELECT invalidity_date FROM certificates WHERE serial = :s", s=serial)
    assert row.invalidity_date is not None


def test_invalidity_date_with_an_offset_is_normalised(
    admin_client: TestClient, services: Services, csrs: Any, clock: FixedClock
) -> None:
    serial = good_serial(services, csrs)
    moment = clock.now() - timedelta(days=1)
    plus_two = moment.astimezone(timezone(timedelta(hours=2))).isoformat()

    response = revoke(admin_client, serial, "keyCompromise", invalidity_date=plus_two)

    assert response.status_code == 200, response.text
    assert datetime.fromisoformat(response.json()["invalidity_date"]) == moment
    shown = admin_client.get(f"/admin/certificates/{serial}").json()["invalidity_date"]
    assert datetime.fromisoformat(shown) == moment
    assert datetime.fromisoformat(shown).utcoffset() == timedelta(0), shown


# --- Audit ----------------------------------------------------------------------------------------


def test_audit_newest_first_naming_the_admin(
    admin_client: TestClient,
    admin_pem: str,
    services: Services,
    csrs: Any,
    clock: FixedClock,
) -> None:
    admin = x509.load_pem_x509_certificate(admin_pem.encode())
    actor = f"cert:{serial_of(admin)} {admin.subject.rfc4514_string()}"
    serial = good_serial(services, csrs)
    first = admin_client.post("/admin/tokens", json={"names": ["first.zone"]}).json()
    second = admin_client.post(
        "/admin/tokens", json={"names": ["second.zone"]}
    ).json()  # same instant
    clock.advance(minutes=5)
    assert revoke(admin_client, serial, "certificateHold").status_code == 200
    clock.advance(minutes=5)
    assert admin_client.post(f"/admin/certificates/{serial}/unhold", json={}).status_code == 200

    response = admin_client.get("/admin/audit")

    assert response.status_code == 200, response.text
    entries = response.json()["items"]
    fields = {"id", "at", "actor", "action", "target", "details", "prev_hash", "hash"}
    assert all(set(e) == fields for e in entries), entries
    newest = [(e["action"], e["target"]) for e in entries[:4]]
    assert newest == [
        ("certificate.unhold", serial),
        ("certificate.revoke", serial),
        ("token.create", second["id"]),
        ("token.create", first["id"]),
    ], entries[:4]
    assert all(e["actor"] == actor for e in entries[:4]), [e["actor"] for e in entries[:4]]
    assert actor == f"cert:{serial_of(admin)} CN=admin"
    moments = [datetime.fromisoformat(e["at"]) for e in entries]
    assert moments == sorted(moments, reverse=True), "newest first"
    assert entries[1]["details"]["reason"] == "certificateHold"
    # The next page starts after the last entry seen: `next_cursor`, or its old name before_id.
    first_page = admin_client.get("/admin/audit", params={"limit": 2}).json()
    assert first_page["items"] == entries[:2], first_page
    page = admin_client.get(
        "/admin/audit", params={"cursor": first_page["next_cursor"], "limit": 2}
    )
    assert page.status_code == 200, page.text
    assert page.json()["items"] == entries[2:4], page.text
    old_style = admin_client.get("/admin/audit", params={"before_id": entries[1]["id"], "limit": 2})
    assert old_style.json()["items"] == entries[2:4], old_style.text
    assert entries[-1]["action"] in {"ca.init", "certificate.issue"}, "init's rows come last"
    assert response.json()["next_cursor"] is None, "one page holds them all"
