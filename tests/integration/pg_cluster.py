"""A throwaway PostgreSQL cluster that a test may stop and start (the suite's shared server
must never be stopped): initdb into a temporary directory, pg_ctl on a free loopback port,
run as the `postgres` user when the tests run as root, as .ci/run does."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.integration.live import free_port

PG_ROOT = Path("/usr/lib/postgresql")
COMMAND_SECONDS = 60


def pg_bindir() -> Path | None:
    """The newest PostgreSQL server installation with initdb and pg_ctl (not client-only)."""
    found = [
        directory
        for directory in PG_ROOT.glob("*/bin")
        if all((directory / tool).exists() for tool in ("initdb", "pg_ctl", "postgres"))
    ]
    return max(found, key=lambda d: int(d.parent.name), default=None) if found else None


class Cluster:
    """One cluster: `start()`, `stop()` (fast shutdown: sessions are cut, as in an outage),
    `start()` again on the same port, `destroy()`."""

    def __init__(self) -> None:
        bindir = pg_bindir()
        if bindir is None:
            pytest.skip(f"PostgreSQL server binaries (initdb, pg_ctl) not found under {PG_ROOT}")
        self.bindir = bindir
        self.as_root = os.geteuid() == 0
        if self.as_root and not _user_exists("postgres"):
            pytest.skip("running as root and there is no `postgres` user to run PostgreSQL")
        # Outside pytest's tmp_path: its parents are private to root, and the server runs as
        # the postgres user.
        self.directory = Path(tempfile.mkdtemp(prefix="mintca-outage-pg."))
        if self.as_root:
            shutil.chown(self.directory, "postgres", "postgres")
        self.data = self.directory / "data"
        self.log = self.directory / "postgres.log"
        self.port = free_port()
        self._run("initdb", f"--pgdata={self.data}", "--username=postgres", "--auth=trust",
                  "--encoding=UTF8", "--locale=C", "--no-sync")  # fmt: skip

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/mintca"

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories='{self.directory}' -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c autovacuum=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                  "start", "-o", options)  # fmt: skip

    def create_database(self) -> None:
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "mintca")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.directory, ignore_errors=True)

    def _run(self, tool: str, *args: str, check: bool = True) -> None:
        command: Sequence[str] = [str(self.bindir / tool), *args]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(
            command,
            cwd=self.directory,  # the postgres user may not read the caller's directory
            capture_output=True,
            text=True,
            timeout=COMMAND_SECONDS,
            check=False,
        )
        if check and done.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed: {done.stdout}{done.stderr}\n{log}")


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
