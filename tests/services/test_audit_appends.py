"""The audit chain in the database: appends from two processes at once keep one chain, the
head follows the newest entry, and rows written before the chain existed are chained by the
migration."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from sqlalchemy import JSON, Integer, String, column, insert, select, table

from app.ca.audit_chain import GENESIS_HASH, ChainEntry, StoredEntry, first_broken
from app.db.engine import Database
from app.db.migrate import alembic_config
from app.db.models import AuditChainRecord, AuditRecord, UTCDateTime
from app.services.audit import record
from tests.conftest import DatabaseFactory

# audit_log as revision 0001 made it, before the chain's columns
LEGACY_AUDIT = table(
    "audit_log",
    column("id", Integer()),
    column("at", UTCDateTime()),
    column("actor", String()),
    column("action", String()),
    column("target", String()),
    column("details", JSON()),
)
APPENDS_PER_PROCESS = 40
PROCESS_TIMEOUT = 120  # seconds; the appends take about a second


def check_chain(db: Database) -> list[AuditRecord]:
    """Every entry in id order, after asserting the chain holds and the head is its end."""
    with db.read() as session:
        rows = list(session.scalars(select(AuditRecord).order_by(AuditRecord.id)))
        head = session.get(AuditChainRecord, 1)
    stored = [
        StoredEntry(
            ChainEntry(r.id, r.at, r.actor, r.action, r.target, r.details, r.prev_hash), r.hash
        )
        for r in rows
    ]
    broken, last_hash = first_broken(stored)
    assert broken is None, f"the chain breaks at entry {broken}"
    assert head is not None
    assert (head.last_id, head.last_hash) == (
        (rows[-1].id, last_hash) if rows else (0, GENESIS_HASH)
    )
    return rows


APPENDER = textwrap.dedent(
    """
    import sys, time
    from datetime import UTC, datetime
    from pathlib import Path
    from app.db.engine import Database
    from app.services.audit import record

    url, name, count, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    db = Database(url, pool_size=1)
    while not start.exists():
        time.sleep(0.01)
    for n in range(count):
        with db.write() as session:
            record(session, at=datetime.now(UTC), actor=name, action="test.append",
                   target=f"{name}-{n}", details={"n": n})
    db.dispose()
    """
)


def test_two_processes_appending_at_once_keep_one_chain(database_url: str, tmp_path: Path) -> None:
    start = tmp_path / "start"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, database_url, name, str(APPENDS_PER_PROCESS), start],
            stderr=subprocess.PIPE,
        )
        for name in ("first", "second")
    ]
    time.sleep(0.5)  # both processes are importing and waiting for the start file
    start.touch()
    for process in processes:
        _, stderr = process.communicate(timeout=PROCESS_TIMEOUT)
        assert process.returncode == 0, stderr.decode()

    db = Database(database_url, pool_size=1)
    try:
        rows = check_chain(db)
    finally:
        db.dispose()
    assert len(rows) == 2 * APPENDS_PER_PROCESS
    assert [r.id for r in rows] == list(range(1, len(rows) + 1)), "ids are the chain positions"
    for name in ("first", "second"):
        mine = [r.details["n"] for r in rows if r.actor == name]
        assert mine == list(range(APPENDS_PER_PROCESS)), f"{name}: {mine}"


def test_entries_of_one_transaction_are_chained_in_order(database_url: str) -> None:
    db = Database(database_url, pool_size=1)
    try:
        with db.write() as session:
            for n in range(3):
                record(session, at=datetime.now(UTC), actor="a", action="x", target=str(n))
        failed = False
        try:
            with db.write() as session:
                record(session, at=datetime.now(UTC), actor="a", action="x", target="lost")
                raise RuntimeError("the action fails")
        except RuntimeError:
            failed = True
        assert failed
        with db.write() as session:
            record(session, at=datetime.now(UTC), actor="a", action="x", target="3")
        rows = check_chain(db)
    finally:
        db.dispose()
    assert [r.target for r in rows] == ["0", "1", "2", "3"], "a rolled-back entry leaves no trace"


def test_the_migration_chains_rows_written_before_it(
    database_factory: DatabaseFactory, tmp_path: Path
) -> None:
    url = database_factory.new_template("audit_legacy")
    config = alembic_config()
    db = Database(url, pool_size=1)
    try:
        with db.engine.connect() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0001")
            connection.commit()
            for n, details in enumerate(({"b": 1, "a": [1, 2]}, {}, {"reason": "é"}), start=1):
                connection.execute(
                    insert(LEGACY_AUDIT).values(
                        id=n * 2,  # legacy ids may have gaps
                        at=datetime(2026, 11, 1, 12, 0, n, 5, tzinfo=UTC),
                        actor="mintca init",
                        action="ca.init",
                        target=f"legacy-{n}",
                        details=details,
                    )
                )
            connection.commit()
            command.upgrade(config, "head")
            connection.commit()
        assert [r.id for r in check_chain(db)] == [2, 4, 6]
        with db.write() as session:
            record(session, at=datetime.now(UTC), actor="a", action="x", target="new")
        rows = check_chain(db)
    finally:
        db.dispose()
        database_factory.discard(url)
    assert [(r.id, r.target) for r in rows[-2:]] == [(6, "legacy-3"), (7, "new")]
