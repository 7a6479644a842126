"""The OCSP and enrollment fast paths at the HTTP protocol: a `GET /ocsp/{b64}` or `POST /ocsp`
that the OCSP cache can answer (pre-signed, or signed afresh with the request's nonce) is
answered inside the parser's callbacks, in one write, before uvicorn builds a request cycle, an
ASGI scope and an asyncio task for it: those were most of a cached answer's CPU time in the
profile. A plain JSON `POST /v1/certificates` with a token this process knows is checked and
signed there too, and answered in one write when its group commit has committed; until then
it holds uvicorn's cycle slot, so a pipelined request waits behind it as uvicorn would make it.
Anything else, and any request this class is not sure of, goes on to uvicorn's cycle and the
app (whose ASGI fast paths and routes stay the authority), with the body already read.

It relies on uvicorn's httptools protocol internals, as app.server.tls_scope does; uvicorn is
pinned to a minor range and tests/server keeps live tests of every branch."""

from __future__ import annotations

import contextlib
import logging
import time
from concurrent.futures import Future
from typing import Any, ClassVar, Protocol
from urllib.parse import unquote

from starlette.responses import Response
from uvicorn.protocols.http.httptools_impl import STATUS_LINE
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from app.api.enroll_fast import PATH as ENROLL_PATH
from app.api.enroll_fast import EnrollFastAnswers, TakenRequest, first_headers
from app.api.limits import MAX_BODY_BYTES
from app.server.limits import LimitedHttpToolsProtocol

log = logging.getLogger(__name__)

Headers = list[tuple[bytes, bytes]]
_ENROLL_URL = ENROLL_PATH.encode("ascii")


class FastAnswers(Protocol):
    """What app.api.ocsp_fast.OCSPFastAnswers offers the protocol."""

    def find(self, method: str, path: str, body: bytes | None) -> tuple[Headers, bytes] | None: ...

    def observe(self, method: str, path: str, seconds: float) -> None: ...


class _PendingAnswer:
    """Holds uvicorn's cycle slot while an enrollment commits, with the attributes uvicorn
    reads and sets there: a pipelined request queues behind it, shutdown clears keep_alive,
    a lost connection sets disconnected."""

    def __init__(self, keep_alive: bool) -> None:
        self.keep_alive = keep_alive
        self.response_started = False
        self.response_complete = False
        self.disconnected = False
        self.message_event = self  # uvicorn sets it when the connection is lost

    def set(self) -> None:
        """As asyncio.Event.set: nothing waits on it here."""


class OCSPFastProtocol(LimitedHttpToolsProtocol):
    """The public listener's protocol; `answers` and `enroll` are set per server (see
    `ocsp_protocol`)."""

    answers: ClassVar[FastAnswers]
    enroll: ClassVar[EnrollFastAnswers | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fast_body: bytearray | None = None  # set while reading a request we may answer
        self._fast_request = ("", "")  # its method and decoded path
        self._enrolling: TakenRequest | None = None  # an enrollment's token and grant
        self._close_after = False  # shutdown began while its body was on the way

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._fast_body = None
        self._enrolling = None
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
        if self._enrolling is not None and self.enroll is not None:
            taken, self._enrolling = self._enrolling, None
            self._start_enrollment(self.enroll, taken, bytes(collected))
            return
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
        the OCSP paths, or an enrollment the fast path takes, nothing unusual about it, and
        no answer in progress before it."""
        method, url = self.parser.get_method(), self.url
        enrolling = method == b"POST" and url == _ENROLL_URL
        if not enrolling and not _is_ocsp(method, url):
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
        if enrolling:
            return self._may_enroll()
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

    def _may_enroll(self) -> bool:
        if self.enroll is None:
            return False
        taken = self.enroll.takes(first_headers(self.headers), self.scheme, self._client_host())
        if taken is None:
            return False
        self._enrolling = taken
        self._fast_request = ("POST", ENROLL_PATH)
        return True

    def _client_host(self) -> str | None:
        return self.client[0] if self.client else None

    def _start_enrollment(
        self, enroll: EnrollFastAnswers, taken: TakenRequest, body: bytes
    ) -> None:
        """Check and sign now; answer when the group commit has committed (`_enrolled`)."""
        started = time.perf_counter()
        keep_alive = self._keeps_alive()
        try:
            future = enroll.start(taken, self._client_host(), body)
        except Exception as exc:  # refused before anything was written
            self._cancel_timer()
            self._answer_enrollment(enroll, enroll.answer(exc), keep_alive, started)
            self.on_response_complete()
            return
        if future is None:  # not a plain body: the route judges it
            self._to_app(bytearray(body))
            super().on_message_complete()
            return
        self._cancel_timer()
        pending = _PendingAnswer(keep_alive)
        self.cycle = pending  # type: ignore[assignment]
        loop = self.loop

        def committed(done: Future[Any]) -> None:  # in the group-commit writer's thread
            with contextlib.suppress(RuntimeError):  # the loop closed, and the connection
                loop.call_soon_threadsafe(self._enrolled, enroll, pending, done, started)

        future.add_done_callback(committed)

    def _enrolled(
        self, enroll: EnrollFastAnswers, pending: _PendingAnswer, done: Future[Any], started: float
    ) -> None:
        pending.response_complete = True
        if pending.disconnected or self.transport.is_closing():
            return  # the client left; what it asked for is stored all the same
        self._answer_enrollment(enroll, enroll.answer(done), pending.keep_alive, started)
        self.on_response_complete()  # uvicorn's: a pipelined request, or the keep-alive timer

    def _answer_enrollment(
        self, enroll: EnrollFastAnswers, response: Response, keep_alive: bool, started: float
    ) -> None:
        self._write(response.status_code, response.raw_headers, bytes(response.body), keep_alive)
        enroll.observe(response.status_code, time.perf_counter() - started)

    def _keeps_alive(self) -> bool:
        return (
            not self._close_after
            and self.parser.get_http_version() != "1.0"
            and self.parser.should_keep_alive()
        )

    def _send_answer(self, headers: Headers, body: bytes) -> None:
        """An OCSP answer, then uvicorn's bookkeeping after a response and the keep-alive timer."""
        keep_alive = self._keeps_alive()
        self._write(200, headers, body, keep_alive)
        self.server_state.total_requests += 1
        if keep_alive and not self.transport.is_closing():
            self._unset_keepalive_if_required()
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def _write(self, status: int, headers: Headers, body: bytes, keep_alive: bool) -> None:
        """Status line, headers and body in one write, as uvicorn's cycle frames them: its
        default headers (date, server) first, `connection: close` when not keeping alive
        (and then the connection closes)."""
        parts = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            parts += (name, b": ", value, b"\r\n")
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        if not keep_alive:
            parts.append(b"connection: close\r\n")
        parts += (b"\r\n", body)
        self.transport.write(b"".join(parts))
        if self.access_log:
            self._log_access(self.parser.get_http_version(), status)
        if not keep_alive:
            self.transport.close()

    def _log_access(self, http_version: str, status: int) -> None:
        """uvicorn's access line, with the arguments its cycle passes (app.server.logs)."""
        method, path = self._fast_request
        scope: Any = {"client": self.client, "path": path, "query_string": b""}
        self.access_logger.info(
            '%s - "%s %s HTTP/%s" %d',
            get_client_addr(scope),
            method,
            get_path_with_query_string(scope),
            http_version,
            status,
        )


def _is_ocsp(method: bytes, url: bytes) -> bool:
    if method == b"POST":
        return url == b"/ocsp"
    return method == b"GET" and url.startswith(b"/ocsp/") and b"?" not in url and b"#" not in url


def ocsp_protocol(
    header_timeout: float, answers: FastAnswers, enroll: EnrollFastAnswers | None = None
) -> type[OCSPFastProtocol]:
    """The protocol class for the public listener's uvicorn.Config(http=...): this header
    timeout, the OCSP fast path answering from `answers`, and enrollment from `enroll`."""
    return type(
        "MintCAPublicHttpProtocol",
        (OCSPFastProtocol,),
        {"answers": answers, "enroll": enroll, "header_timeout": header_timeout},
    )
