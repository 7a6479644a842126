"""Processes: bind both sockets in the parent, then serve in this process or in
MINTCA_WORKERS children, each with its own Services and database engine."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
import socket
from types import FrameType

import uvloop

from app.config import Settings
from app.server.listeners import bind_socket, serve_both
from app.server.logs import configure_logging
from app.server.multiprocess import mark_worker_dead
from app.services.container import Services

log = logging.getLogger(__name__)


def run(settings: Settings) -> None:
    public_sock = bind_socket(settings.public_bind)
    mtls_sock = bind_socket(settings.mtls_bind)
    log.info(
        "MintCA listening: public %s (%s), mtls %s (https, client certificates required)",
        settings.public_bind,
        "https" if settings.public_tls else "http",
        settings.mtls_bind,
    )
    if settings.workers == 1:
        serve_worker(settings, public_sock, mtls_sock)
        return
    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(
            target=serve_worker, args=(settings, public_sock, mtls_sock), name=f"mintca-{n}"
        )
        for n in range(settings.workers)
    ]
    for child in children:
        child.start()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        for child in children:
            if child.is_alive():
                child.terminate()  # SIGTERM: each worker shuts down gracefully

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for child in children:
        child.join()
        mark_worker_dead(child.pid)


def serve_worker(settings: Settings, public_sock: socket.socket, mtls_sock: socket.socket) -> None:
    configure_logging(settings)  # a spawned child starts with no logging configured
    services = Services(settings)
    try:
        # uvloop: the loop uvicorn picks itself when it runs one; here serve_both runs it, and
        # asyncio's own selector loop showed in the OCSP fast path's profile.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve_both(services, public_sock, mtls_sock))
    finally:
        services.close()
