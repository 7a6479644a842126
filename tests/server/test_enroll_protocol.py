"""The enrollment fast path in the public listener's HTTP protocol (app.server.ocsp_protocol),
on an in-memory transport: a request it takes is checked at once and answered, in one write
framed as uvicorn frames the app's answers, only when its commit has resolved (from the
group-commit writer's thread); until then a pipelined request waits behind it, a client that
left gets nothing, and shutdown closes the connection after the answer."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.api.enroll_fast import EnrollFastAnswers
from app.errors import RateLimitedError, TokenRejectedError
from app.server.ocsp_protocol import Headers
from tests.server.http_harness import App, Connection, run


class NoOCSP:
    def find(self, method: str, path: str, body: bytes | None) -> tuple[Headers, bytes] | None:
        return None

    def observe(self, method: str, path: str, seconds: float) -> None:
        raise AssertionError("no OCSP answer expected")


def issued(value: str) -> Response:
    return Response(value, status_code=201, media_type="application/json")


class FakeEnroll:
    """Takes `Bearer good`; a body b"plain..." starts an enrollment whose future the test
    resolves, b"odd" is not plain (the route judges it), b"limited" is refused at once."""

    def __init__(self) -> None:
        self.pending: list[Future[str]] = []
        self.observed: list[int] = []

    def takes(self, headers: dict[bytes, str], scheme: str | None, client: str | None) -> Any:
        if headers.get(b"content-type") != "application/json":
            return None
        return "taken" if headers.get(b"authorization") == "Bearer good" else None

    def start(self, taken: Any, client: str | None, body: bytes) -> Future[str] | None:
        assert taken == "taken"
        if body == b"odd":
            return None
        if body == b"limited":
            raise RateLimitedError("too many enrollments from this token", retry_after=7)
        future: Future[str] = Future()
        self.pending.append(future)
        return future

    @staticmethod
    def answer(outcome: Future[str] | BaseException) -> Response:
        error = outcome if isinstance(outcome, BaseException) else outcome.exception()
        if error is not None:
            return EnrollFastAnswers.answer(error)  # the real problem answers
        assert not isinstance(outcome, BaseException)
        return issued(outcome.result())

    def observe(self, status: int, seconds: float) -> None:
        self.observed.append(status)


class IssuingApp(App):
    """The route behind: answers every request as the fake enrollment does."""

    async def respond(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> None:
        await issued('{"by":"x"}')(scope, receive, send)


def enroll(body: bytes, *, token: bytes = b"good", extra: bytes = b"") -> bytes:
    return (
        b"POST /v1/certificates HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"authorization: Bearer "
        + token
        + b"\r\ncontent-length: %d\r\n" % len(body)
        + extra
        + b"\r\n"
        + body
    )


async def commit(future: Future[str], value: str | BaseException) -> None:
    """Resolve as the group-commit writer does, from another thread, then let the loop run
    what that scheduled."""

    def finish() -> None:
        if isinstance(value, BaseException):
            future.set_exception(value)
        else:
            future.set_result(value)

    thread = threading.Thread(target=finish)
    thread.start()
    thread.join()
    for _ in range(20):
        await asyncio.sleep(0)


def test_an_enrollment_is_answered_once_its_commit_resolves_as_uvicorn_frames_it() -> None:
    async def test() -> None:
        fake, app = FakeEnroll(), IssuingApp()
        connection = Connection(NoOCSP(), app, fake)
        assert await connection.send(enroll(b"plain")) == b"", "answered before the commit"
        assert connection.protocol.timeout_keep_alive_task is None
        await commit(fake.pending[0], '{"by":"x"}')
        fast = bytes(connection.transport.written)
        # The same answer from the app behind (an unknown token goes there), through
        # uvicorn's own request cycle, on a connection of its own.
        routed = await Connection(NoOCSP(), app, fake).send(enroll(b"plain", token=b"other"))
        assert fast == routed, (fast, routed)
        assert fast.startswith(b"HTTP/1.1 201 Created\r\ndate: Sun, 06 Dec 2026"), fast
        assert app.bodies == [b"plain"], "only the routed request reached the app"
        assert fake.observed == [201], "the answer was not timed"
        assert connection.protocol.server_state.total_requests == 1
        assert connection.protocol.timeout_keep_alive_task is not None, "no keep-alive timer"
        assert not connection.transport.closed

    run(test)


def test_a_request_pipelined_behind_a_pending_enrollment_waits_for_it() -> None:
    async def test() -> None:
        fake, app = FakeEnroll(), App()
        connection = Connection(NoOCSP(), app, fake)
        health = b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n"
        assert await connection.send(enroll(b"plain-1") + health) == b""
        await commit(fake.pending[0], '"one"')
        written = bytes(connection.transport.written)
        assert written.index(b'\r\n\r\n"one"') < written.index(b"app:GET /health 0"), written
        # And the next enrollment on the connection is the fast path's again.
        await connection.send(enroll(b"plain-2"))
        await commit(fake.pending[1], '"two"')
        assert bytes(connection.transport.written).endswith(b'\r\n\r\n"two"')
        assert fake.observed == [201, 201]

    run(test)


def test_a_refusal_before_the_commit_is_answered_at_once_with_its_problem() -> None:
    async def test() -> None:
        fake = FakeEnroll()
        connection = Connection(NoOCSP(), App(), fake)
        written = await connection.send(enroll(b"limited"))
        assert written.startswith(b"HTTP/1.1 429 Too Many Requests\r\n"), written
        assert b"\r\nretry-after: 7\r\n" in written
        assert b"\r\ncontent-type: application/problem+json\r\n" in written
        assert fake.observed == [429]
        assert not connection.transport.closed
        assert connection.protocol.timeout_keep_alive_task is not None

    run(test)


def test_a_commit_that_fails_is_answered_with_its_problem() -> None:
    async def test() -> None:
        fake = FakeEnroll()
        connection = Connection(NoOCSP(), App(), fake)
        await connection.send(enroll(b"plain"))
        await commit(
            fake.pending[0], TokenRejectedError("the token is unknown, expired or used up")
        )
        written = bytes(connection.transport.written)
        assert written.startswith(b"HTTP/1.1 401 Unauthorized\r\n"), written
        assert b"used up" in written

    run(test)


def test_what_the_fast_path_does_not_take_goes_to_the_app_with_its_whole_body() -> None:
    async def test() -> None:
        fake, app = FakeEnroll(), App()
        for request in (
            enroll(b"plain", token=b"uncached"),  # the route looks the token up
            enroll(b"odd"),  # not a plain body
            enroll(b"plain", extra=b"expect: 100-continue\r\n"),
            enroll(b"plain").replace(b"application/json", b"application/pkcs10"),
        ):
            written = await Connection(NoOCSP(), app, fake).send(request)
            assert written.endswith(
                b"app:POST /v1/certificates %d" % len(request.split(b"\r\n\r\n")[1])
            ), written
        assert fake.pending == [], "an enrollment started for a request handed on"

    run(test)


def test_a_client_that_leaves_before_the_commit_gets_nothing() -> None:
    async def test() -> None:
        fake = FakeEnroll()
        connection = Connection(NoOCSP(), App(), fake)
        await connection.send(enroll(b"plain"))
        connection.protocol.connection_lost(None)
        written_before = bytes(connection.transport.written)
        await commit(fake.pending[0], '"stored all the same"')
        assert bytes(connection.transport.written) == written_before == b""
        assert fake.observed == []

    run(test)


def test_shutdown_while_an_enrollment_commits_answers_it_then_closes() -> None:
    async def test() -> None:
        fake = FakeEnroll()
        connection = Connection(NoOCSP(), App(), fake)
        await connection.send(enroll(b"plain"))
        connection.protocol.shutdown()
        assert not connection.transport.closed, "closed under a pending answer"
        await commit(fake.pending[0], '"last"')
        written = bytes(connection.transport.written)
        assert b"\r\nconnection: close\r\n\r\n" in written, written
        assert written.endswith(b'"last"')
        assert connection.transport.closed

    run(test)
