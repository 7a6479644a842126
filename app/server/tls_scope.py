"""Puts the verified client certificate into the ASGI scope, as the ASGI TLS extension shapes
it (`scope["extensions"]["tls"]["client_cert_chain"]`, PEM strings). uvicorn does not fill
that extension, so this subclass of its httptools protocol does, per connection. It relies on
uvicorn internals (`self.app`, used for every request of the connection): uvicorn is pinned
to a minor range and tests/integration keeps a real-handshake test."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class TLSScopeApp:
    """Adds one connection's TLS facts to the scope of each of its requests."""

    def __init__(self, app: ASGIApp, tls: dict[str, Any]) -> None:
        self.app = app
        self.tls = tls

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            extensions = dict(scope.get("extensions") or {})
            extensions["tls"] = self.tls
            scope = {**scope, "extensions": extensions}
        await self.app(scope, receive, send)


# The ASGI TLS extension gives the version as the protocol's number.
_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def tls_extension(ssl_object: ssl.SSLObject) -> dict[str, Any]:
    # On a resumed session OpenSSL still reports the certificate of the original handshake,
    # so the application's per-request database check still sees who it is.
    der = ssl_object.getpeercert(binary_form=True)
    return {
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": None,
        "server_cert": None,
        "session_reused": ssl_object.session_reused,
    }


class PeerCertHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.app = TLSScopeApp(self.app, tls_extension(ssl_object))

    def shutdown(self) -> None:
        # Closing TLS waits up to 30 s (asyncio's ssl_shutdown_timeout) for the peer's
        # close_notify, which an idle keep-alive client never sends: SIGTERM waited for it.
        idle = self.cycle is None or self.cycle.response_complete
        super().shutdown()
        if idle:
            asyncio.get_running_loop().call_later(1.0, self._abort_if_open)

    def _abort_if_open(self) -> None:
        if self in self.server_state.connections:
            self.transport.abort()
