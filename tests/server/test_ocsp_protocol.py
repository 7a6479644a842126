"""The OCSP fast path in the public listener's HTTP protocol (app.server.ocsp_protocol), on an
in-memory transport: which requests it answers itself (in one write, framed as uvicorn frames
the app's answers) and which it hands to the app with their whole body, in order."""

from __future__ import annotations

import logging

import pytest

from app.api.limits import MAX_BODY_BYTES
from app.server.ocsp_protocol import Headers
from tests.server.http_harness import App, Connection, run

CACHED_DER = b"\x30\x03\x0a\x01\x00"  # what the fake cache answers
CACHED_HEADERS: Headers = [(b"content-length", b"5"), (b"content-type", b"ocsp")]
FAST_ANSWER = (
    b"HTTP/1.1 200 OK\r\ndate: Sun, 06 Dec 2026 06:00:00 GMT\r\nserver: uvicorn\r\n"
    b"content-length: 5\r\ncontent-type: ocsp\r\n\r\n" + CACHED_DER
)


class FakeAnswers:
    """Answers POST bodies starting with b"hit" and GET paths ending in "hit"; records asks."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, bytes | None]] = []
        self.observed: list[tuple[str, str]] = []
        self.fail = False

    def find(self, method: str, path: str, body: bytes | None) -> tuple[Headers, bytes] | None:
        self.asked.append((method, path, body))
        if self.fail:
            raise RuntimeError("the cache broke")
        hit = body.startswith(b"hit") if body is not None else path.endswith("hit")
        return (CACHED_HEADERS, CACHED_DER) if hit else None

    def observe(self, method: str, path: str, seconds: float) -> None:
        self.observed.append((method, path))


def post(body: bytes, *, extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    return (
        b"POST /ocsp HTTP/" + version + b"\r\nhost: x\r\ncontent-type: application/ocsp-request\r\n"
        b"content-length: %d\r\n" % len(body) + extra + b"\r\n" + body
    )


def get(path: bytes, *, extra: bytes = b"") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nhost: x\r\n" + extra + b"\r\n"


def test_a_cached_post_is_answered_in_one_write_without_the_app() -> None:
    async def test() -> None:
        answers, app = FakeAnswers(), App()
        connection = Connection(answers, app)
        written = await connection.send(post(b"hit-1"))
        assert written == FAST_ANSWER, written
        assert app.bodies == [], "the app was called"
        assert answers.asked == [("POST", "/ocsp", b"hit-1")]
        assert answers.observed == [("POST", "/ocsp")], "the answer was not timed"
        assert not connection.transport.closed
        assert connection.protocol.timeout_keep_alive_task is not None, "no keep-alive timer"
        assert connection.protocol.server_state.total_requests == 1

    run(test)


def test_a_cached_get_is_asked_with_the_decoded_path() -> None:
    async def test() -> None:
        answers, app = FakeAnswers(), App()
        written = await Connection(answers, app).send(get(b"/ocsp/MEow%2Bhit"))
        assert written == FAST_ANSWER, written
        assert answers.asked == [("GET", "/ocsp/MEow+hit", None)]

    run(test)


@pytest.mark.parametrize(
    ("request_bytes", "expected"),
    [
        pytest.param(post(b"miss"), b"app:POST /ocsp 4", id="a cache miss"),
        pytest.param(get(b"/ocsp/miss"), b"app:GET /ocsp/miss 0", id="a GET miss"),
        pytest.param(get(b"/ocsp/hit?x=1"), b"app:GET /ocsp/hit 0", id="a query string"),
        pytest.param(get(b"/health"), b"app:GET /health 0", id="another path"),
        pytest.param(
            post(b"hit", extra=b"expect: 100-continue\r\n"),
            b"app:POST /ocsp 3",
            id="expect 100-continue",
        ),
        pytest.param(
            b"PUT /ocsp HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nhit",
            b"app:PUT /ocsp 3",
            id="another method",
        ),
        pytest.param(
            b"POST /ocsp HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
            + (b"400\r\n" + b"h" * 0x400 + b"\r\n") * (MAX_BODY_BYTES // 0x400 + 1)
            + b"0\r\n\r\n",
            b"app:POST /ocsp %d" % ((MAX_BODY_BYTES // 0x400 + 1) * 0x400),
            id="a chunked body over the limit",
        ),
    ],
)
def test_what_the_cache_does_not_answer_goes_to_the_app_with_its_whole_body(
    request_bytes: bytes, expected: bytes
) -> None:
    async def test() -> None:
        answers, app = FakeAnswers(), App()
        written = await Connection(answers, app).send(request_bytes)
        assert b"HTTP/1.1 200 OK\r\n" in written, written
        assert written.endswith(b"\r\n\r\n" + expected), written

    run(test)


def test_a_failing_cache_leaves_the_answer_to_the_app(caplog: pytest.LogCaptureFixture) -> None:
    async def test() -> None:
        answers, app = FakeAnswers(), App()
        answers.fail = True
        written = await Connection(answers, app).send(post(b"hit"))
        assert written.endswith(b"app:POST /ocsp 3"), written
        assert "the OCSP fast path failed" in caplog.text

    run(test)


def test_pipelined_requests_are_answered_in_order_whoever_answers() -> None:
    async def test() -> None:
        answers, app = FakeAnswers(), App()
        connection = Connection(answers, app)
        written = await connection.send(post(b"hit") + post(b"hit"))
        assert written == FAST_ANSWER * 2, written
        # Behind an answer the app is still working on, the next requests queue in uvicorn's
        # pipeline and the app answers them, in order.
        written = await connection.send(post(b"miss") + post(b"hit") + get(b"/ocsp/hit"))
        first, second, third = (
            written.index(text)
            for text in (b"app:POST /ocsp 4", b"app:POST /ocsp 3", b"app:GET /ocsp/hit 0")
        )
        assert first < second < third, written
        assert FAST_ANSWER not in written

    run(test)


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(post(b"hit", version=b"1.0"), id="HTTP/1.0"),
        pytest.param(post(b"hit", extra=b"connection: close\r\n"), id="connection: close"),
    ],
)
def test_a_connection_the_client_closes_gets_connection_close(request_bytes: bytes) -> None:
    async def test() -> None:
        connection = Connection(FakeAnswers(), App())
        written = await connection.send(request_bytes)
        assert b"\r\nconnection: close\r\n\r\n" in written, written
        assert written.endswith(CACHED_DER)
        assert connection.transport.closed

    run(test)


def test_shutdown_while_a_body_arrives_answers_it_then_closes() -> None:
    async def test() -> None:
        connection = Connection(FakeAnswers(), App())
        whole = post(b"hit-and-more")
        assert await connection.send(whole[:-4]) == b""
        connection.protocol.shutdown()
        assert not connection.transport.closed
        written = await connection.send(whole[-4:])
        assert b"\r\nconnection: close\r\n\r\n" in written, written
        assert connection.transport.closed

    run(test)


def test_the_access_line_is_uvicorns(caplog: pytest.LogCaptureFixture) -> None:
    async def test() -> None:
        connection = Connection(FakeAnswers(), App())
        connection.protocol.access_log = True
        with caplog.at_level(logging.INFO, logger="uvicorn.access"):
            await connection.send(get(b"/ocsp/a%2Bhit"))
        records = [r for r in caplog.records if r.name == "uvicorn.access"]
        assert [r.args for r in records] == [
            ("127.0.0.1:50000", "GET", "/ocsp/a%2Bhit", "1.1", 200)
        ], caplog.text

    run(test)


def test_a_client_that_is_not_reading_waits_in_uvicorns_cycle() -> None:
    async def test() -> None:
        answers, app = FakeAnswers(), App()
        connection = Connection(answers, app)
        connection.protocol.pause_writing()  # the transport's buffer is full
        connection.protocol.data_received(post(b"hit"))
        assert answers.asked == [], "answered past a full write buffer"
        connection.protocol.resume_writing()
        written = await connection.send(b"")
        assert written.endswith(b"app:POST /ocsp 3"), written

    run(test)


def test_past_the_concurrency_limit_uvicorn_answers_503() -> None:
    async def test() -> None:
        answers, app = FakeAnswers(), App()
        connection = Connection(answers, app)
        connection.protocol.limit_concurrency = 1  # this connection alone reaches it
        written = await connection.send(post(b"hit"))
        assert written.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), written
        assert answers.asked == []
        assert app.bodies == []

    run(test)
