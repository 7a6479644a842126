"""Both listeners in one event loop: the public app and the mtls app, each a uvicorn server,
stopped together by one signal handler (uvicorn's per-server handlers would fight)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn

from app.api.apps import create_mtls_asgi, create_public_asgi, enroll_answers
from app.api.ocsp_fast import OCSPFastAnswers
from app.ca.issuance import pem_bundle
from app.config import Settings, parse_bind
from app.server.background import report_failed_round
from app.server.limits import (
    KEEP_ALIVE_SECONDS,
    MAX_CONCURRENCY,
    MAX_HEAD_BYTES,
    limited_protocol,
)
from app.server.live_tls import LiveTLS, watch_forever
from app.server.ocsp_protocol import ocsp_protocol
from app.services.container import Services

log = logging.getLogger(__name__)
ACME_POLL_SECONDS = 0.5  # how soon a challenge a client answered is validated
REPUBLISH_INTERVAL_SECONDS = 60


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # serve_both() owns the signals


def bind_socket(bind: str) -> socket.socket:
    """A listening TCP socket. proto=IPPROTO_TCP matters: asyncio disables Nagle only on
    such sockets, and with Nagle every keep-alive response waits ~40 ms."""
    host, port = parse_bind(bind)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@contextlib.contextmanager
def trust_bundle(services: Services) -> Iterator[Path]:
    """Every CA this process knows, as a file for the mtls listener's `ssl_ca_certs`; it
    exists only while uvicorn loads its SSL context."""
    bundle = pem_bundle(*(a.certificate for a in services.keyring.all()))
    with tempfile.NamedTemporaryFile(suffix=".pem") as handle:
        handle.write(bundle)
        handle.flush()
        yield Path(handle.name)


def server_configs(
    services: Services, settings: Settings, ca_bundle: Path
) -> tuple[uvicorn.Config, uvicorn.Config]:
    tls_files: dict[str, Any] = {
        "ssl_certfile": str(settings.data_dir / "server.pem"),
        "ssl_keyfile": str(settings.data_dir / "server-key.pem"),
    }
    # One protocol class for both listeners: it brings the peer certificate into the scope,
    # closes idle TLS connections promptly on shutdown and times out slow request heads.
    common: dict[str, Any] = {
        "http": limited_protocol(settings.header_timeout.total_seconds()),
        "lifespan": "off",
        "log_level": settings.log_level,
        # uvicorn formats every access line (quoting the path) whenever its logger has a
        # handler, even at a level that drops it: 7 % of an OCSP GET's time in the profile.
        "access_log": settings.log_level.lower() in ("debug", "info"),
        "log_config": None,  # app.server.logs configured the handlers (text or JSON)
        "proxy_headers": False,
        # Limits, set deliberately (README, Security). The protocol is httptools-based, so
        # the head size limit it enforces is MAX_HEAD_BYTES; the h11 setting matches it in
        # case the protocol is ever switched to h11.
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
        "limit_concurrency": MAX_CONCURRENCY,
    }
    # The public listener answers OCSP from the cache in its protocol, before uvicorn's
    # request cycle (app.server.ocsp_protocol).
    enroll = enroll_answers(services)
    public_http = ocsp_protocol(
        settings.header_timeout.total_seconds(),
        OCSPFastAnswers(services.ocsp, services.clock),
        enroll,
    )
    public = uvicorn.Config(
        create_public_asgi(services, enroll),
        **{**common, "http": public_http},
        **(tls_files if settings.public_tls else {}),
    )
    mtls = uvicorn.Config(
        create_mtls_asgi(services),
        **common,
        **tls_files,
        ssl_ca_certs=str(ca_bundle),
        ssl_cert_reqs=ssl.CERT_REQUIRED,
    )
    return public, mtls


async def serve_both(
    services: Services, public_sock: socket.socket, mtls_sock: socket.socket
) -> None:
    # Read before uvicorn reads the files: what it loads is never older than what we note.
    server_stamp = services.server_cert.stamp()
    server_pair = services.server_cert.read()
    with trust_bundle(services) as bundle, services.server_cert.reading():
        public_config, mtls_config = server_configs(services, services.settings, bundle)
        mtls_config.load()  # reads the bundle into the SSL context now
        public_config.load()
    assert mtls_config.ssl is not None
    live = LiveTLS(
        mtls=mtls_config.ssl,
        serving=[c.ssl for c in (public_config, mtls_config) if c.ssl is not None],
        trusted={a.ca_id for a in services.keyring.all()},
        server_stamp=server_stamp,
        server_pair=server_pair,
    )
    servers = [_Server(public_config), _Server(mtls_config)]

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    republisher = asyncio.create_task(_republish_forever(services))
    watcher = asyncio.create_task(watch_forever(services, live))
    acme_validator = asyncio.create_task(_validate_acme_forever(services))
    try:
        await asyncio.gather(
            servers[0].serve(sockets=[public_sock]), servers[1].serve(sockets=[mtls_sock])
        )
    finally:
        republisher.cancel()
        watcher.cancel()
        acme_validator.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _republish_forever(services: Services) -> None:
    """Republish CRLs before nextUpdate; every replica runs this, the CA row lock makes the
    work happen once."""
    while True:
        try:
            await asyncio.to_thread(services.crls.republish_due)
        except Exception as exc:
            report_failed_round(log, "CRL republication", exc)
        await asyncio.sleep(REPUBLISH_INTERVAL_SECONDS)


async def _validate_acme_forever(services: Services) -> None:
    """Validate ACME challenges in the background (never in a request's worker thread); the
    state is in the database, so every replica may run this and a restart resumes."""
    while True:
        try:
            worked = await asyncio.to_thread(services.acme.validator.run_due)
        except Exception as exc:
            report_failed_round(log, "ACME validation", exc)
            worked = 0
        await asyncio.sleep(0 if worked else ACME_POLL_SECONDS)
