"""The certificate-status generation: a number that changes whenever a revocation, hold or
unhold commits anywhere, read without a database round trip.

On one host it lives in an 8-byte file in the data dir, mmap'd by every worker of every
`mintca serve` sharing that dir: the writer bumps it after its commit and before it answers,
so a request that starts after the revocation's 200 sees the new number. Other hosts sharing
PostgreSQL hear of the change through LISTEN/NOTIFY (app.db.status_events) and bump a
process-local part. Readers only compare for equality: any change empties their caches.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from app.db.engine import Database
from app.db.status_events import StatusListener, on_status_change

log = logging.getLogger(__name__)

GENERATION_FILE = "status-generation"
_SIZE = 8


class StatusSignal:
    def __init__(self, path: Path | None) -> None:
        self._local = 0
        self._local_lock = threading.Lock()
        self._fd: int | None = None
        self._map: mmap.mmap | None = None
        self._shared: memoryview | None = None
        if path is not None:
            self._open(path)
        self._listener: StatusListener | None = None
        self._unregister: list[Callable[[], None]] = []

    def _open(self, path: Path) -> None:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError:
            # Other workers and processes on this data dir then learn of a revocation only
            # through PostgreSQL's NOTIFY (not before the revocation's 200): say so loudly.
            log.error("cannot open %s: OCSP caches are invalidated in this process only", path)
            return
        with _locked(fd):
            if os.fstat(fd).st_size < _SIZE:
                os.ftruncate(fd, _SIZE)
        self._fd = fd
        self._map = mmap.mmap(fd, _SIZE)
        self._shared = memoryview(self._map).cast("Q")

    @property
    def shared(self) -> bool:
        """Whether every process on this data dir sees this process's bumps (the file is
        mapped), so a reader may trust an unchanged value."""
        return self._shared is not None

    def value(self) -> int:
        """The current generation; cheap enough for every request."""
        shared = self._shared
        return self._local + (shared[0] if shared is not None else 0)

    def bump(self) -> None:
        """A status changed: every reader on this host sees a new value from now on."""
        with self._local_lock:
            self._local += 1
        if self._shared is not None and self._fd is not None:
            with _locked(self._fd):
                self._shared[0] = (self._shared[0] + 1) % 2**64

    def bump_local(self) -> None:
        """A status changed on another host (the bump in its data dir is not ours)."""
        with self._local_lock:
            self._local += 1

    def watch(self, db: Database) -> None:
        """Bump after every status change committed through `db` in this process, and on
        PostgreSQL after every one NOTIFY reports from other hosts."""
        self._unregister.append(on_status_change(db, self.bump))
        if not db.is_sqlite:
            self._listener = StatusListener(db, self.bump_local)
            self._listener.start()

    def close(self) -> None:
        for unregister in self._unregister:
            unregister()
        if self._listener is not None:
            self._listener.stop()
        if self._shared is not None:
            self._shared.release()
            self._shared = None
        if self._map is not None:
            self._map.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@contextlib.contextmanager
def _locked(fd: int) -> Iterator[None]:
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
