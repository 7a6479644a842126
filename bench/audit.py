"""The audit chain's cost: appends per second (one entry per transaction, from 1 and 2
processes at once, on a fresh SQLite file or on PostgreSQL) and verification per second (the
hash recomputation `mintca audit verify` does). Bounded in count. Prints a table.

    .venv/bin/python bench/audit.py [--appends 500] [--database-url postgresql+psycopg://…]

A PostgreSQL URL must name an empty database at Alembic head (the rows stay there).
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from app.ca.audit_chain import ChainEntry, StoredEntry, first_broken
from app.db.engine import Database
from app.db.migrate import upgrade
from app.db.models import AuditRecord
from app.services.audit import record


def append(url: str, count: int, name: str, ready: Any, start: Any) -> None:
    db = Database(url, pool_size=1)
    ready.release()
    start.wait()
    for n in range(count):
        with db.write() as session:
            record(session, at=datetime.now(UTC), actor=name, action="bench", target=str(n))
    db.dispose()


def appends_per_second(url: str, count: int, processes: int) -> float:
    context = multiprocessing.get_context("spawn")
    ready, start = context.Semaphore(0), context.Event()
    workers = [
        context.Process(target=append, args=(url, count, f"p{n}", ready, start))
        for n in range(processes)
    ]
    for worker in workers:
        worker.start()
    for _worker in workers:
        ready.acquire()  # every process has imported and connected: time the appends only
    started = time.perf_counter()
    start.set()
    for worker in workers:
        worker.join()
        if worker.exitcode != 0:
            raise SystemExit(f"an appending process failed ({worker.exitcode})")
    return count * processes / (time.perf_counter() - started)


def verified_per_second(url: str) -> tuple[int, float]:
    db = Database(url, pool_size=1)
    with db.read() as session:
        rows = list(session.scalars(select(AuditRecord).order_by(AuditRecord.id)))
    db.dispose()
    stored = [
        StoredEntry(
            ChainEntry(r.id, r.at, r.actor, r.action, r.target, r.details, r.prev_hash), r.hash
        )
        for r in rows
    ]
    started = time.perf_counter()
    broken, _ = first_broken(stored)
    elapsed = time.perf_counter() - started
    assert broken is None, f"the chain breaks at entry {broken}"
    return len(stored), len(stored) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--appends", type=int, default=500, help="per process")
    parser.add_argument("--database-url")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        url = args.database_url or f"sqlite:///{Path(directory) / 'bench.db'}"
        upgrade(url)
        one = appends_per_second(url, args.appends, 1)
        two = appends_per_second(url, args.appends, 2)
        entries, verify_rate = verified_per_second(url)
    print(f"{'measure':<44} {'value':>12}")
    print(f"{'appends/s, 1 process (1 entry per commit)':<44} {one:>12.0f}")
    print(f"{'appends/s, 2 processes at once':<44} {two:>12.0f}")
    print(f"{'entries verified/s (hash recomputation)':<44} {verify_rate:>12.0f}")
    print(f"{'entries in the chain, which holds':<44} {entries:>12}")


if __name__ == "__main__":
    main()
