"""Connection limits of both listeners: how long a client may take to send a request head,
and how large that head may be. uvicorn's httptools protocol has neither (a partial request
stayed open 28 s, for ever in fact), and `h11_max_incomplete_event_size` applies only to its
h11 protocol, so this subclass of MintCA's protocol adds both."""

from __future__ import annotations

import asyncio
from typing import Any

from app.server.tls_scope import PeerCertHttpToolsProtocol

# Set deliberately in uvicorn.Config for both listeners (see listeners.server_configs).
MAX_HEAD_BYTES = 64 * 1024  # request line and headers; the body limit is the same 64 KiB
KEEP_ALIVE_SECONDS = 5  # an idle keep-alive connection is closed after this
MAX_CONCURRENCY = 1000  # connections plus tasks per listener and worker; then 503
DEFAULT_HEADER_TIMEOUT_SECONDS = 10.0

_HEADERS_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-length: 0\r\nconnection: close\r\n\r\n"
)


class LimitedHttpToolsProtocol(PeerCertHttpToolsProtocol):
    """Closes a connection whose request head (from the connection's start, or from the
    first byte of a later request) is not complete within `header_timeout` seconds, or whose
    body is not complete within as long again after the head; answers 431 to a head over
    MAX_HEAD_BYTES. Between requests uvicorn's keep-alive timeout applies."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT_SECONDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        self._in_head = True
        self._head_bytes = 0

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        super().connection_made(transport)
        self._arm_timer()  # a client that connects and sends nothing is also cut off

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self.transport.write(_HEADERS_TOO_LARGE)
                self.transport.close()

    def on_message_begin(self) -> None:
        # A later request's head is timed from its first byte; between requests uvicorn's
        # keep-alive timeout applies.
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        if self._timer is None:
            self._arm_timer()

    def on_headers_complete(self) -> None:
        self._time_body()
        super().on_headers_complete()

    def _time_body(self) -> None:
        self._in_head = False
        self._arm_timer()  # now for the body (at most 64 KiB, refused above that)

    def on_message_complete(self) -> None:
        self._cancel_timer()
        super().on_message_complete()

    def _arm_timer(self) -> None:
        self._cancel_timer()
        self._timer = self.loop.call_later(self.header_timeout, self._timed_out)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        cycle = self.cycle
        answering = cycle is not None and not self._in_head and cycle.response_started
        if not answering and not self.transport.is_closing():
            self.transport.close()


def limited_protocol(header_timeout: float) -> type[LimitedHttpToolsProtocol]:
    """The protocol class for uvicorn.Config(http=...), with this header timeout."""
    return type(
        "MintCAHttpProtocol", (LimitedHttpToolsProtocol,), {"header_timeout": header_timeout}
    )
