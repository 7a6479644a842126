"""Group commit: one writer thread per process stores the pending writes of many requests in
one transaction, so they share one commit (one fsync on SQLite, one WAL flush on PostgreSQL).

Each request waits on its own future, which resolves only after the shared transaction has
committed: nothing is answered before it is durable. A write checks first and writes last, and
refuses with a domain error (a spent token) only before it has written anything, so a refusal
fails only its own request; any other error rolls the batch back and each write is retried in
a transaction of its own, so again only the faulty one fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.db.engine import Database
from app.errors import MintCAError, ServiceUnavailableError

log = logging.getLogger(__name__)

T = TypeVar("T")
_BEFORE_COMMIT = "mintca.group_commit.before_commit"
# Enough to absorb every connection of a loaded worker in one commit, small enough that one
# transaction stays short on PostgreSQL.
MAX_BATCH = 128
# How long at most the writer waits for more writes after the first of a batch, while writes
# arrive concurrently (the last batch had several): a commit costs about as much as the writes
# in it together, so bigger batches free CPU for the requests (README, Performance).
LINGER_SECONDS = 0.005
# What it waits for within that time: this many turns of the event loop that submitted the
# last write. By then the loop has checked, signed and submitted the requests it had read, so
# they share the commit, and the commit's CPU comes when the loop has none to spend.
LOOP_TURNS = 3


@dataclass
class _Pending:
    write: Callable[[Session], Any]
    future: Future[Any] = field(default_factory=Future)


class GroupCommitter:
    """Runs `submit()`ted writes in shared transactions, in arrival order. While one commit is
    in flight the next requests queue, and the writer takes all of them at once. It waits to
    gather more only under concurrent load, as PostgreSQL's commit_delay does only with
    commit_siblings: after a batch of several writes it lingers before the next, until the
    event loop that submitted the last write has turned LOOP_TURNS times, at most `linger`
    seconds (the whole `linger` for writes from threads without a loop); after a batch of one
    (a lone request) the next commits at once."""

    def __init__(
        self,
        db: Database,
        *,
        max_batch: int = MAX_BATCH,
        linger: float = LINGER_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._db = db
        self._max_batch = max_batch
        self._linger = linger
        self._sleep = sleep
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None  # the last submitter's

    def submit(self, write: Callable[[Session], T]) -> T:
        """Run `write(session)` in a shared write transaction and return its result once that
        transaction has committed.

        `write` must raise a domain error (MintCAError) only before it writes anything.

        Raises:
            whatever `write` raised (the rest of the batch goes on), or the commit's error
            when the shared transaction failed (then nothing of it is stored).
            ServiceUnavailableError: the committer is closed.
        """
        result: T = self.submit_nowait(write).result()
        return result

    def submit_nowait(self, write: Callable[[Session], T]) -> Future[T]:
        """`submit` without waiting: the future resolves (or fails) after the shared commit,
        so an event loop can await it (asyncio.wrap_future) instead of parking a thread.

        Raises:
            ServiceUnavailableError: the committer is closed.
        """
        pending = _Pending(write)
        with contextlib.suppress(RuntimeError):  # not from an event loop: keep the last one
            self._loop = asyncio.get_running_loop()
        with self._lock:
            if self._closed:
                raise ServiceUnavailableError("the server is shutting down")
            if self._thread is None:
                # Started on first use, so a process that never enrolls (or forks later) has none.
                self._thread = threading.Thread(
                    target=self._run, name="mintca-group-commit", daemon=True
                )
                self._thread.start()
            self._queue.put(pending)
        return pending.future

    def queued(self) -> int:
        """Writes waiting for the writer (not counting the batch it is committing)."""
        return self._queue.qsize()

    def close(self) -> None:
        """Finish what is queued, then stop the writer."""
        with self._lock:
            self._closed = True
            thread = self._thread
            self._queue.put(None)
        if thread is not None:
            thread.join(timeout=30)

    def _run(self) -> None:
        concurrent = False
        while True:
            first = self._queue.get()
            if first is None:
                return
            if concurrent and self._linger > 0:
                self._linger_for_more()  # more are on their way: let them share this commit
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(item)
            concurrent = len(batch) > 1
            try:
                self._commit(batch)
            except Exception:  # the writer must outlive any batch, or every request would hang
                log.exception("the group-commit writer failed a batch")
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(ServiceUnavailableError("write failed"))

    def _linger_for_more(self) -> None:
        """Until the last submitter's event loop has turned LOOP_TURNS times, at most
        `linger` seconds; the whole `linger` when no event loop submitted writes."""
        loop = self._loop
        if loop is None:
            self._sleep(self._linger)
            return
        turned = threading.Event()

        def turn(left: int) -> None:  # each call_soon runs on the loop's next turn
            if left <= 1:
                turned.set()
            else:
                loop.call_soon(turn, left - 1)

        try:
            loop.call_soon_threadsafe(turn, LOOP_TURNS)
        except RuntimeError:  # that loop is closed: no request of it is on its way
            return
        turned.wait(self._linger)

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            outcomes = self._run_batch(batch)
        except _ItemFailedError:
            # Something broke in a way that may have left partial writes: roll all back and run
            # each write in a transaction of its own, so only the faulty one fails.
            for pending in batch:
                self._commit_alone(pending)
            return
        except ServiceUnavailableError as exc:  # the database is down (logged in one line)
            for pending in batch:
                pending.future.set_exception(exc)
            return
        except BaseException as exc:  # the shared commit failed: nothing of it is stored
            log.exception("group commit of %d writes failed", len(batch))
            for pending in batch:
                pending.future.set_exception(exc)
            return
        for pending, (ok, value) in zip(batch, outcomes, strict=True):
            if ok:
                pending.future.set_result(value)
            else:
                pending.future.set_exception(value)

    def _run_batch(self, batch: list[_Pending]) -> list[tuple[bool, Any]]:
        outcomes: list[tuple[bool, Any]] = []
        with self._db.write() as session, session.no_autoflush:
            # No flush per write: every row goes to the database in the commit's one flush
            # (multi-row INSERTs), the only statements per write are its own checks.
            for pending in batch:
                try:
                    outcomes.append((True, pending.write(session)))
                except MintCAError as exc:  # refused before writing anything (the contract)
                    outcomes.append((False, exc))
                except DBAPIError:
                    raise  # the database's, not this write's: the whole batch fails below
                except Exception as exc:
                    log.exception("a write in a group commit failed; retrying each alone")
                    raise _ItemFailedError from exc
            _run_before_commit(session)
        return outcomes

    def _commit_alone(self, pending: _Pending) -> None:
        try:
            with self._db.write() as session:
                value = pending.write(session)
                _run_before_commit(session)
        except BaseException as exc:
            pending.future.set_exception(exc)
        else:
            pending.future.set_result(value)


def before_commit(session: Session, key: str, finish: Callable[[Session], None]) -> None:
    """Run `finish(session)` once, after every write of the shared transaction and before it
    commits: how writes that share a row (a token's uses) write it once per batch."""
    session.info.setdefault(_BEFORE_COMMIT, {}).setdefault(key, finish)


def _run_before_commit(session: Session) -> None:
    for finish in session.info.pop(_BEFORE_COMMIT, {}).values():
        finish(session)


class _ItemFailedError(Exception):
    """A write raised something other than a domain refusal."""
