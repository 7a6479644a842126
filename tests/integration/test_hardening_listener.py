"""The listeners over real sockets (issue 12, items 9 and 11): tokens are refused over plain
HTTP unless the operator allowed it for loopback, and accepted over TLS; a client that does
not finish its request head (or then its body) within MINTCA_HEADER_TIMEOUT is disconnected,
on both listeners; a request head over 64 KiB gets 431."""

from __future__ import annotations

import shutil
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.config import Settings
from tests.conftest import DatabaseFactory, InitialisedTemplate, make_settings
from tests.helpers import csr_pem
from tests.integration.live import LiveServer, start_server, stop_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HEADER_TIMEOUT_SECONDS = 1


def _token(server: LiveServer, name: str) -> str:
    with server.admin_client() as admin:
        response = admin.post("/admin/tokens", json={"names": [name], "profile": "server"})
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


@pytest.fixture(scope="module")
def strict_server(
    database_factory: DatabaseFactory,
    initialised_template: InitialisedTemplate,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LiveServer]:
    """One server for the module (a copy of the session's CA): plain HTTP public listener,
    insecure tokens NOT allowed, a 1 s header timeout."""
    directory = tmp_path_factory.mktemp("strict-server")
    shutil.copytree(initialised_template.data_dir, directory / "data")
    url = database_factory.clone(initialised_template.database_url, "strict", directory)
    settings = make_settings(
        data_dir=directory / "data", database_url=url, kek=initialised_template.kek
    )
    process, server = start_server(
        settings,
        directory / "serve.log",
        extra_env={
            "MINTCA_ALLOW_INSECURE_TOKENS": "false",
            "MINTCA_HEADER_TIMEOUT": f"{HEADER_TIMEOUT_SECONDS}s",
        },
    )
    try:
        yield server
    finally:
        stop_server(process)
        database_factory.discard(url)


def test_plain_http_token_is_refused_without_the_flag(strict_server: LiveServer) -> None:
    token = _token(strict_server, "plain.internal")
    with strict_server.public_client() as client:
        response = client.post(
            "/v1/certificates",
            json={"csr": csr_pem("plain.internal")},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 403, response.text
    assert response.json()["type"] == "urn:mintca:problem:tls-required", response.text


def _wait_closed(sock: socket.socket | ssl.SSLSocket, seconds: float) -> bytes:
    """Read until the server closes (b"" at EOF) or `seconds` pass; what was read."""
    sock.settimeout(seconds)
    received = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            break
        except (ConnectionResetError, ssl.SSLError):
            return received + b"<reset>"
        if not chunk:
            return received + b"<eof>"
        received += chunk
    return received


@pytest.mark.parametrize("listener", ["public", "mtls"])
def test_half_a_request_is_cut_off_after_the_header_timeout(
    strict_server: LiveServer, listener: str
) -> None:
    public_port = int(strict_server.public_url.rsplit(":", 1)[1])
    port = public_port if listener == "public" else strict_server.mtls_port
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock: socket.socket | ssl.SSLSocket = raw
    if listener == "mtls":
        context = strict_server.ssl_context(
            strict_server.data_dir / "admin.pem", strict_server.data_dir / "admin-key.pem"
        )
        sock = context.wrap_socket(raw, server_hostname="localhost")
    try:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finished
        outcome = _wait_closed(sock, 3 * HEADER_TIMEOUT_SECONDS)
        assert outcome.endswith((b"<eof>", b"<reset>")), f"still open: {outcome!r}"
        assert b"HTTP/1.1 200" not in outcome, outcome
    finally:
        sock.close()


def test_a_stalled_body_is_cut_off(strict_server: LiveServer) -> None:
    public_port = int(strict_server.public_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", public_port), timeout=10) as sock:
        sock.sendall(
            b"POST /ocsp HTTP/1.1\r\nHost: x\r\nContent-Type: application/ocsp-request\r\n"
            b"Content-Length: 1000\r\n\r\n0123456789"  # 990 bytes never come
        )
        outcome = _wait_closed(sock, 3 * HEADER_TIMEOUT_SECONDS)
    assert outcome.endswith((b"<eof>", b"<reset>")), f"still open: {outcome!r}"


def test_a_connection_that_sends_nothing_is_closed(strict_server: LiveServer) -> None:
    public_port = int(strict_server.public_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", public_port), timeout=10) as sock:
        assert _wait_closed(sock, 3 * HEADER_TIMEOUT_SECONDS).endswith((b"<eof>", b"<reset>"))


def test_complete_requests_on_a_kept_alive_connection_still_work(
    strict_server: LiveServer,
) -> None:
    with strict_server.public_client() as client:
        for _ in range(3):
            assert client.get("/health").status_code == 200
            time.sleep(HEADER_TIMEOUT_SECONDS / 2)


def test_oversize_request_head_gets_431(strict_server: LiveServer) -> None:
    public_port = int(strict_server.public_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", public_port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        try:
            for _ in range(70):
                sock.sendall(b"X-Filler: " + b"a" * 1000 + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed while we were still sending
        outcome = _wait_closed(sock, 3 * HEADER_TIMEOUT_SECONDS)
    assert outcome.startswith(b"HTTP/1.1 431"), outcome[:200]


def test_token_over_tls_is_accepted_without_the_flag(
    initialised_settings: Settings, tmp_path: Path
) -> None:
    process, server = start_server(
        initialised_settings,
        tmp_path / "serve.log",
        extra_env={"MINTCA_PUBLIC_TLS": "true", "MINTCA_ALLOW_INSECURE_TOKENS": "false"},
    )
    try:
        token = _token(server, "tls.internal")
        with server.public_client() as client:
            assert str(client.base_url).startswith("https://")
            response = client.post(
                "/v1/certificates",
                json={"csr": csr_pem("tls.internal")},
                headers={"Authorization": f"Bearer {token}"},
            )
        assert response.status_code == 201, response.text
    finally:
        stop_server(process)
