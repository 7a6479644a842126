"""The OCSP fast path at the HTTP protocol: a `GET /ocsp/{b64}` or `POST /ocsp` that the OCSP
cache can answer (pre-signed, or signed afresh with the request's nonce) is answered inside the
parser's callbacks, in one write, before uvicorn builds a request cycle, an ASGI scope and an
asyncio task for it: those were most of a cached answer's CPU time in the profile. Anything
the cache cannot answer, and any request this class is not sure of, goes on to uvicorn's cycle
and the app (whose ASGI fast path and route stay the authority), with the body already read.

It relies on uvicorn's httptools protocol internals, as app.server.tls_scope does; uvicorn is
pinned to a minor range and tests/server keeps live tests of every branch."""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar, Protocol
from urllib.parse import unquote

from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from app.api.limits import MAX_BODY_BYTES
from app.server.limits import LimitedHttpToolsProtocol

log = logging.getLogger(__name__)

Headers = list[tuple[bytes, bytes]]
_STATUS_OK = b"HTTP/1.1 200 OK\r\n"


class FastAnswers(Protocol):
    """What app.api.ocsp_fast.OCSPFastAnswers offers the protocol."""

    def find(self, method: str, path: str, body: bytes | None) -> tuple[Headers, bytes] | None: ...

    def observe(self, method: str, path: str, seconds: float) -> None: ...


class OCSPFastProtocol(LimitedHttpToolsProtocol):
    """The public listener's protocol; `answers` is set per server (see `ocsp_protocol`)."""

    answers: ClassVar[FastAnswers]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fast_body: bytearray | None = None  # set while reading a request we may answer
        self._fast_request = ("", "")  # its method and decoded path
        self._close_after = False  # shutdown began while its body was on the way

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._fast_body = None
        # A keep-alive timer armed by a fast answer earlier in the same chunk of data must
        # not close the connection under this request.
        self._unset_keepalive_if_required()

    def on_headers_complete(self) -> None:
        if self._may_answer():
            self._time_body()
            self._fast_body = bytearray()
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        collected = self._fast_body
        if collected is None:
            super().on_body(body)
            return
        collected += body
        if len(collected) > MAX_BODY_BYTES:  # the app answers (and enforces the limit)
            self._to_app(collected)

    def on_message_complete(self) -> None:
        collected = self._fast_body
        if collected is None:
            super().on_message_complete()
            return
        self._fast_body = None
        method, path = self._fast_request
        started = time.perf_counter()
        try:
            found = self.answers.find(method, path, bytes(collected) if method == "POST" else None)
        except Exception:
            log.exception("the OCSP fast path failed; the app answers")
            found = None
        if found is None:
            self._to_app(collected)
            super().on_message_complete()
            return
        self._cancel_timer()
        self._send_answer(*found)
        self.answers.observe(method, path, time.perf_counter() - started)

    def shutdown(self) -> None:
        if self._fast_body is not None:  # answer the request being read, then close
            self._close_after = True
            return
        super().shutdown()

    def _may_answer(self) -> bool:
        """Whether this request, its head just parsed, may be answered here: GET or POST on
        the OCSP paths, nothing unusual about it, and no answer in progress before it."""
        method, url = self.parser.get_method(), self.url
        if method == b"POST":
            if url != b"/ocsp":
                return False
        elif method != b"GET" or not url.startswith(b"/ocsp/") or b"?" in url or b"#" in url:
            return False
        if self.parser.should_upgrade() or self.expect_100_continue or self.root_path:
            return False
        cycle = self.cycle
        if (cycle is not None and not cycle.response_complete) or self.pipeline:
            return False  # pipelined behind an answer in progress: uvicorn queues it
        if self.flow.write_paused:
            return False  # the client is not reading: uvicorn's cycle waits for it
        limit = self.limit_concurrency
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            return False  # uvicorn answers 503
        if not url.isascii():
            return False
        path = url.decode("ascii")
        self._fast_request = (method.decode("ascii"), unquote(path) if "%" in path else path)
        return True

    def _to_app(self, collected: bytearray) -> None:
        """Hand the request to uvicorn's cycle and the app, with the body read so far."""
        self._fast_body = None
        super().on_headers_complete()
        if collected:
            super().on_body(bytes(collected))

    def _send_answer(self, headers: Headers, body: bytes) -> None:
        """Status line, headers and body in one write, as uvicorn's cycle frames them: its
        default headers (date, server) first, `connection: close` when not keeping alive."""
        http_version = self.parser.get_http_version()
        keep_alive = (
            not self._close_after and http_version != "1.0" and self.parser.should_keep_alive()
        )
        parts = [_STATUS_OK]
        for name, value in self.server_state.default_headers:
            parts += (name, b": ", value, b"\r\n")
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        if not keep_alive:
            parts.append(b"connection: close\r\n")
        parts += (b"\r\n", body)
        self.transport.write(b"".join(parts))
        if self.access_log:
            self._log_access(http_version)
        self.server_state.total_requests += 1
        if not keep_alive:
            self.transport.close()
        elif not self.transport.is_closing():
            self._unset_keepalive_if_required()
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def _log_access(self, http_version: str) -> None:
        """uvicorn's access line, with the arguments its cycle passes (app.server.logs)."""
        method, path = self._fast_request
        scope: Any = {"client": self.client, "path": path, "query_string": b""}
        self.access_logger.info(
            '%s - "%s %s HTTP/%s" %d',
            get_client_addr(scope),
            method,
            get_path_with_query_string(scope),
            http_version,
            200,
        )


def ocsp_protocol(header_timeout: float, answers: FastAnswers) -> type[OCSPFastProtocol]:
    """The protocol class for the public listener's uvicorn.Config(http=...): this header
    timeout, and the OCSP fast path answering from `answers`."""
    return type(
        "MintCAPublicHttpProtocol",
        (OCSPFastProtocol,),
        {"answers": answers, "header_timeout": header_timeout},
    )
