"""ACME in process: the public app on Services whose validation lookups go to a test DNS
server, an HTTP server for http-01 answers, and a small signed-request client."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient

from app.api.apps import create_public_app
from app.ca.acme.jws import b64url_decode
from app.clock import FixedClock
from app.config import Settings
from app.services.container import Services
from tests.acme.dns_server import FakeDNS, running_dns
from tests.acme.jose import SigningKey, eab, jws

ZONE = "test.internal"
# A public URL with a TLD: pkilint refuses `http://testserver/...` in the CRL and AIA URLs.
PUBLIC_URL = "http://ca.example.internal"


@dataclass
class Http01Answers:
    """Serves /.well-known/acme-challenge/<token> from `answers`."""

    port: int = 0
    answers: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def http01() -> Iterator[Http01Answers]:
    answers = Http01Answers()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            token = self.path.rsplit("/", 1)[-1]
            body = answers.answers.get(token, "").encode()
            if body.startswith(b"REDIRECT "):  # a test's redirect: `REDIRECT <location>`
                self.send_response(302)
                self.send_header("Location", body.split(b" ", 1)[1].decode())
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    answers.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield answers
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class TlsAlpnAnswer:
    """A TLS server offering acme-tls/1 with the certificate a test writes to `cert_path`."""

    port: int
    cert_path: Path
    key_path: Path


@pytest.fixture
def tlsalpn(tmp_path: Path) -> Iterator[TlsAlpnAnswer]:
    answer = TlsAlpnAnswer(0, tmp_path / "alpn-cert.pem", tmp_path / "alpn-key.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    answer.port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.set_alpn_protocols(["acme-tls/1"])
            try:
                context.load_cert_chain(answer.cert_path, answer.key_path)
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield answer
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


@pytest.fixture
def test_dns() -> Iterator[FakeDNS]:
    with running_dns(ZONE) as server:
        yield server


@pytest.fixture
def acme_services(
    initialised_settings: Settings,
    clock: FixedClock,
    test_dns: FakeDNS,
    http01: Http01Answers,
    tlsalpn: TlsAlpnAnswer,
) -> Iterator[Services]:
    settings = initialised_settings.model_copy(
        update={
            "acme_dns_resolver": test_dns.resolver,
            "acme_http01_port": http01.port,
            "acme_tlsalpn01_port": tlsalpn.port,
            "public_url": PUBLIC_URL,
        }
    )
    built = Services(settings, clock=clock)
    try:
        yield built
    finally:
        built.close()


class AcmeClient:
    """Signs requests as an ACME client would; `key` and `kid` are the current account's."""

    def __init__(
        self, http: httpx.Client, key: SigningKey | None = None, *, base: str = PUBLIC_URL
    ) -> None:
        self.http = http  # may be swapped for another replica's client
        self.base = base  # the public URL the server signs into its URLs
        self.key: SigningKey = key or ec.generate_private_key(ec.SECP256R1())
        self.kid: str | None = None
        self.directory: dict[str, Any] = http.get("/acme/directory").json()

    def path(self, url: str) -> str:
        return url.removeprefix(self.base)

    def nonce(self) -> str:
        return self.http.head(self.path(self.directory["newNonce"])).headers["Replay-Nonce"]

    def post(
        self,
        url: str,
        payload: dict[str, Any] | None,
        *,
        nonce: str | None = None,
        key: SigningKey | None = None,
        use_jwk: bool = False,
    ) -> httpx.Response:
        body = jws(
            key or self.key,
            payload,
            url=url,
            nonce=nonce or self.nonce(),
            kid=None if use_jwk else self.kid,
        )
        headers = {"Content-Type": "application/jose+json"}
        return self.http.post(self.path(url), json=body, headers=headers)

    def register(self, kid: str, hmac_key: str, **extra: Any) -> httpx.Response:
        url = self.directory["newAccount"]
        binding = eab(self.key, kid=kid, hmac_key=b64url_decode(hmac_key), url=url)
        payload = {"termsOfServiceAgreed": True, "externalAccountBinding": binding, **extra}
        response = self.post(url, payload, use_jwk=True)
        if response.status_code in (200, 201):
            self.kid = response.headers["Location"]
        return response


@pytest.fixture
def acme_http(acme_services: Services) -> Iterator[TestClient]:
    with TestClient(create_public_app(acme_services), base_url=PUBLIC_URL) as client:
        yield client


@pytest.fixture
def credential(acme_services: Services) -> tuple[str, str]:
    made = acme_services.acme.accounts.create_credential(
        names=[f"*.{ZONE}"], profile=None, max_validity_days=None, actor="test"
    )
    return made.kid, made.hmac_key


@pytest.fixture
def account(acme_http: TestClient, credential: tuple[str, str]) -> AcmeClient:
    client = AcmeClient(acme_http)
    response = client.register(*credential)
    assert response.status_code == 201, response.text
    return client
