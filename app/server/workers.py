"""Processes: bind both sockets in the parent, then serve in this process or in
MINTCA_WORKERS children, each with its own Services and database engine.

The children are forked from the parent, which has already imported everything a worker
runs (about 1 s of CPU and most of a worker's memory): a spawned child would start a new
interpreter and import it all again, once per worker, on the way to /ready. Nothing that
belongs to one process crosses the fork: the parent has no thread, no database connection
(check_keys and the migration disposed theirs), no event loop; each child builds its own
Services. With a PKCS#11 token the children are spawned instead: a process that inherits a
module initialised by its parent must not use it (PKCS#11 v2.40 §6.6.1, C_Initialize)."""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import signal
import socket
import threading
from collections.abc import Sequence
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
    # The objects made so far live as long as the process: out of the collector's sight, its
    # rounds neither scan them nor, in a forked worker, write to (and so copy) their pages.
    gc.freeze()
    gc.enable()  # `mintca serve` turned it off while it imported (app.cli.main)
    # Worker n's CPU, or None for every worker that the scheduler places.
    cpus: Sequence[int | None] = (
        worker_cpus(settings.workers, allowed_cpus(), settings.cpu_affinity)
        or [None] * settings.workers
    )
    if settings.workers == 1:
        serve_worker(settings, public_sock, mtls_sock, cpus[0])
        return
    forked = start_method(settings) == "fork"
    context = (
        multiprocessing.get_context("fork") if forked else multiprocessing.get_context("spawn")
    )
    children = [
        context.Process(
            target=serve_worker,
            args=(settings, public_sock, mtls_sock, cpus[n]),
            name=f"mintca-{n}",
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


def start_method(settings: Settings) -> str:
    """`fork` unless the parent holds what a child must not inherit: a PKCS#11 module's
    state, or a thread (a lock it holds would stay locked in the child)."""
    if settings.pkcs11_module is not None or threading.active_count() > 1:
        return "spawn"
    return "fork"


def allowed_cpus() -> set[int]:
    """The CPUs this process may run on (its cpuset, taskset), empty where the platform
    cannot tell or pin."""
    if not hasattr(os, "sched_getaffinity") or not hasattr(os, "sched_setaffinity"):
        return set()
    return set(os.sched_getaffinity(0))


def worker_cpus(workers: int, allowed: set[int], setting: str) -> list[int] | None:
    """The CPU each worker keeps to, or None to leave the workers to the scheduler.

    With exactly one worker per allowed CPU (`auto`), worker n runs on the n-th: a worker's
    event loop and its group-commit writer share one GIL, and spread by the scheduler over
    the cores (and moved between them) they handed it over across cores; pinned, enrollments
    went up by a seventh at 2 workers on 2 cores (README: CPU affinity). With fewer workers
    than CPUs the scheduler balances them better than a fixed choice; with more, some would
    share a CPU while others idle."""
    if setting == "off" or not allowed or workers != len(allowed):
        return None
    return sorted(allowed)


def keep_to_cpu(cpu: int) -> None:
    """Pin this worker to `cpu`, before it starts a thread (threads inherit the CPU set of the
    thread that made them). A CPU taken away since the parent looked only costs the pinning."""
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError as exc:
        log.warning("worker %d left to the scheduler: CPU %d: %s", os.getpid(), cpu, exc)
        return
    log.info("worker %d keeps to CPU %d (MINTCA_CPU_AFFINITY=auto)", os.getpid(), cpu)


def serve_worker(
    settings: Settings, public_sock: socket.socket, mtls_sock: socket.socket, cpu: int | None
) -> None:
    configure_logging(settings)  # a spawned child starts with no logging configured
    if cpu is not None:
        keep_to_cpu(cpu)
    services = Services(settings)
    try:
        # uvloop: the loop uvicorn picks itself when it runs one; here serve_both runs it, and
        # asyncio's own selector loop showed in the OCSP fast path's profile.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve_both(services, public_sock, mtls_sock))
    finally:
        services.close()
