"""The public listener's HTTP protocol (app.server.ocsp_protocol) on an in-memory transport,
with an ASGI app behind it that answers after a loop turn: for the tests of its fast paths."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.server import ServerState

from app.server.ocsp_protocol import FastAnswers, Headers, OCSPFastProtocol, ocsp_protocol

DEFAULT_HEADERS: Headers = [(b"date", b"Sun, 06 Dec 2026 06:00:00 GMT"), (b"server", b"uvicorn")]


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}.get(name)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class App:
    """The app behind: answers 'app:<method> <path> <body length>' after a loop turn."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.bodies.append(body)
        await self.respond(scope, body, receive, send)

    async def respond(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> None:
        await asyncio.sleep(0)
        text = f"app:{scope['method']} {scope['path']} {len(body)}".encode()
        headers = [(b"content-length", b"%d" % len(text))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": text})


class Connection:
    """One connection of the public listener's protocol, on an in-memory transport."""

    def __init__(self, answers: FastAnswers, app: App, enroll: Any = None) -> None:
        config = Config(app=app, lifespan="off", log_config=None, limit_concurrency=1000)
        config.load()
        state = ServerState()
        state.default_headers = list(DEFAULT_HEADERS)
        self.protocol: OCSPFastProtocol = ocsp_protocol(10.0, answers, enroll)(
            config=config, server_state=state, app_state={}, _loop=asyncio.get_running_loop()
        )
        self.transport = FakeTransport()
        self.protocol.connection_made(self.transport)

    async def send(self, data: bytes) -> bytes:
        """Feed `data`, let the app's tasks run, return what was written since."""
        start = len(self.transport.written)
        self.protocol.data_received(data)
        for _ in range(20):
            await asyncio.sleep(0)
        return bytes(self.transport.written[start:])


def run(test: Any) -> None:
    asyncio.run(test())
