"""A request body limit as a small ASGI wrapper: it checks Content-Length and counts streamed
bytes, raising PayloadTooLargeError inside the route that reads the body (so JSON routes
answer 413 problem+json and the OCSP route answers malformedRequest); and `read_body`, with
which the raw ASGI fast paths read a body they may still hand to the app."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PayloadTooLargeError

MAX_BODY_BYTES = 64 * 1024


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        too_large = PayloadTooLargeError(f"request bodies are limited to {self.max_bytes} bytes")
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
                raise too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise too_large
            return message

        await self.app(scope, limited_receive, send)


async def read_body(
    scope: Scope, receive: Receive, *, limit: int = MAX_BODY_BYTES
) -> tuple[bytes | None, Receive]:
    """The whole body, and a `receive` that replays what was read for the app behind; (None,
    a replaying `receive`) when the body is declared or turns out larger than `limit`, or the
    client left: a fast path then hands the request on, and the app answers as it would
    have (its own limit included)."""
    for name, value in scope["headers"]:
        if name == b"content-length" and (not value.isdigit() or int(value) > limit):
            return None, receive
    messages: list[Message] = []
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None, _replay(messages, receive)
        chunk = message.get("body", b"")
        size += len(chunk)
        chunks.append(chunk)
        if size > limit:
            return None, _replay(messages, receive)
        if not message.get("more_body", False):
            return b"".join(chunks), _replay(messages, receive)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
