"""Shared fixtures: databases at Alembic head, settings built per test, an initialised CA.

Two ways to get a database, both cheap per test because the slow part happens once per session:

- `database_url`: an empty schema at Alembic head. `settings` points at it, and `initialised`
  runs `mintca init` on it (a real init, with the test's `clock` and `kek`).
- `initialised_settings`: a copy of a CA that was initialised once per session (database and
  data dir: root.pem, ca-chain.pem, server*.pem, admin*.pem). Its KEK is the session's
  `template_kek`. `services` is built on it.

Use one or the other in a test, not both: they share the test's `data_dir`.

The database is a temporary SQLite file, or, when MINTCA_TEST_DATABASE_URL is set
(`postgresql+psycopg://user@host:port/db`), a PostgreSQL database per test made with
`CREATE DATABASE ... TEMPLATE` and dropped afterwards. The role needs CREATEDB.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.pool import NullPool

from app.ca.keys import encode_kek, generate_kek
from app.clock import FixedClock
from app.config import Settings
from app.db.migrate import upgrade
from app.services.container import Services
from app.services.setup import InitOptions, InitReport, initialise

TEST_DATABASE_URL_ENV = "MINTCA_TEST_DATABASE_URL"
PUBLIC_URL = "http://testserver"


def now_utc() -> datetime:
    """The real current time, whole seconds (certificates keep no more)."""
    return datetime.now(UTC).replace(microsecond=0)


def make_settings(*, data_dir: Path, database_url: str, kek: str) -> Settings:
    """Settings from arguments only: never the developer's MINTCA_* environment or `.env`."""
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        kek=kek,
        kek_file=None,
        public_url=PUBLIC_URL,
        _env_file=None,
    )


# --- Databases ---------------------------------------------------------------------------------


class DatabaseFactory(Protocol):
    """Makes template databases once and cheap clones of them per test."""

    def new_template(self, name: str, *, copy_of: str | None = None) -> str:
        """A database that lives for the session: empty, or a copy of another template."""
        ...

    def clone(self, template_url: str, name: str, directory: Path) -> str: ...

    def seal(self, template_url: str) -> None:
        """Called when a template is complete, before it is cloned."""

    def discard(self, url: str) -> None: ...

    def close(self) -> None: ...


class SQLiteDatabases:
    """Template files in a session directory; clones are file copies in the test's tmp_path."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def new_template(self, name: str, *, copy_of: str | None = None) -> str:
        if copy_of is not None:
            return self.clone(copy_of, name, self._directory)
        return f"sqlite:///{self._directory / f'{name}.db'}"

    def clone(self, template_url: str, name: str, directory: Path) -> str:
        target = directory / f"{name}.db"
        shutil.copyfile(_sqlite_path(template_url), target)
        return f"sqlite:///{target}"

    def seal(self, template_url: str) -> None:
        # Fold the WAL into the main file and leave WAL mode, so the template is one file that
        # a plain copy clones; the Database turns WAL on again when it connects to the copy.
        connection = sqlite3.connect(_sqlite_path(template_url))
        try:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            connection.execute("PRAGMA journal_mode=DELETE")
        finally:
            connection.close()

    def discard(self, url: str) -> None:
        pass  # tmp_path goes with the test

    def close(self) -> None:
        pass


class PostgresDatabases:
    """Databases on the server of MINTCA_TEST_DATABASE_URL, named after this process, made and
    dropped through the server's `postgres` maintenance database."""

    def __init__(self, server_url: str) -> None:
        self._server = make_url(server_url)
        self._admin = create_engine(
            self._server.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool
        )
        self._prefix = f"mintca_test_{os.getpid()}"
        self._counter = itertools.count(1)
        self._templates: list[str] = []

    def new_template(self, name: str, *, copy_of: str | None = None) -> str:
        database = f"{self._prefix}_{name}"
        self._execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        if copy_of is None:
            self._execute(f'CREATE DATABASE "{database}"')
        else:
            self._execute(f'CREATE DATABASE "{database}" TEMPLATE "{make_url(copy_of).database}"')
        self._templates.append(database)
        return self._url(database)

    def clone(self, template_url: str, name: str, directory: Path) -> str:
        template = make_url(template_url).database
        database = f"{self._prefix}_{next(self._counter)}_{name}"
        self._execute(f'CREATE DATABASE "{database}" TEMPLATE "{template}"')
        return self._url(database)

    def seal(self, template_url: str) -> None:
        pass  # a template only needs no open connections, and migrate/init close theirs

    def discard(self, url: str) -> None:
        self._drop(make_url(url).database or "")

    def close(self) -> None:
        for database in reversed(self._templates):
            self._drop(database)
        self._admin.dispose()

    def _drop(self, database: str) -> None:
        """DROP ... WITH (FORCE) ends the test's leftover sessions, but a role without
        pg_signal_backend may not end an autovacuum worker in the database; then end our own
        sessions and DROP without FORCE, which makes autovacuum give way."""
        try:
            self._execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        except ProgrammingError as exc:
            if not isinstance(exc.orig, psycopg.errors.InsufficientPrivilege):
                raise
            with self._admin.connect() as connection:
                connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :database AND usename = current_user"
                    ),
                    {"database": database},
                )
            self._execute(f'DROP DATABASE IF EXISTS "{database}"')

    def _url(self, database: str) -> str:
        url: URL = self._server.set(database=database)
        return url.render_as_string(hide_password=False)

    def _execute(self, statement: str) -> None:
        with self._admin.connect() as connection:
            connection.execute(text(statement))


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    assert database, f"not a SQLite file URL: {url}"
    return Path(database)


def _open_database_factory(directory: Path) -> DatabaseFactory:
    server_url = os.environ.get(TEST_DATABASE_URL_ENV)
    if not server_url:
        return SQLiteDatabases(directory)
    if make_url(server_url).get_backend_name() != "postgresql":
        raise pytest.UsageError(f"{TEST_DATABASE_URL_ENV} must be a postgresql URL")
    return PostgresDatabases(server_url)


@pytest.fixture(scope="session", autouse=True)
def _no_mintca_environment() -> Iterator[None]:
    """Hide the developer's MINTCA_* variables (but not MINTCA_TEST_*) from Settings and from
    servers the tests start, so a local MINTCA_OCSP_SIGNER or MINTCA_KEK changes nothing."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("MINTCA_") and not name.startswith("MINTCA_TEST_"):
                patch.delenv(name)
        yield


def pytest_report_header(config: pytest.Config) -> str:
    server_url = os.environ.get(TEST_DATABASE_URL_ENV)
    if not server_url:
        return "mintca test database: sqlite files"
    server = make_url(server_url)
    return f"mintca test database: postgresql at {server.host}:{server.port or 5432}"


@pytest.fixture(scope="session")
def database_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseFactory]:
    databases = _open_database_factory(tmp_path_factory.mktemp("db-templates"))
    try:
        yield databases
    finally:
        databases.close()


@pytest.fixture(scope="session")
def migrated_template_url(database_factory: DatabaseFactory) -> str:
    """An empty schema at Alembic head, migrated once per session; tests get clones."""
    url = database_factory.new_template("migrated")
    upgrade(url)
    database_factory.seal(url)
    return url


@pytest.fixture
def database_url(
    database_factory: DatabaseFactory, migrated_template_url: str, tmp_path: Path
) -> Iterator[str]:
    """A fresh database at Alembic head for this test only."""
    url = database_factory.clone(migrated_template_url, "fresh", tmp_path)
    try:
        yield url
    finally:
        database_factory.discard(url)


# --- Settings, keys, time ----------------------------------------------------------------------


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """The test's data dir (not created: `initialise` makes it, `initialised_settings` fills
    it with a copy of the session's initialised data dir)."""
    return tmp_path / "data"


@pytest.fixture
def kek() -> str:
    """A fresh KEK for this test, base64 as in MINTCA_KEK."""
    return encode_kek(generate_kek())


@pytest.fixture
def clock() -> FixedClock:
    """A FixedClock at the real current time (UTC); `clock.advance(days=31)` moves it."""
    return FixedClock(now_utc())


@pytest.fixture
def settings(data_dir: Path, database_url: str, kek: str) -> Settings:
    """Settings for an uninitialised CA: empty schema at head, empty data dir, fresh KEK."""
    return make_settings(data_dir=data_dir, database_url=database_url, kek=kek)


@pytest.fixture
def initialised(settings: Settings, clock: FixedClock) -> InitReport:
    """`mintca init` with default options, run on `settings` for this test."""
    return initialise(settings, InitOptions(), clock)


# --- An initialised CA, made once per session --------------------------------------------------


@dataclasses.dataclass(frozen=True)
class InitialisedTemplate:
    database_url: str
    data_dir: Path
    kek: str
    report: InitReport


@pytest.fixture(scope="session")
def template_kek() -> str:
    """The KEK of the session's initialised CA (and of every `initialised_settings`)."""
    return encode_kek(generate_kek())


@pytest.fixture(scope="session")
def initialised_template(
    database_factory: DatabaseFactory,
    migrated_template_url: str,
    template_kek: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> InitialisedTemplate:
    """`mintca init` (default options) run once per session on a template database and data
    dir; `initialised_settings` clones both."""
    directory = tmp_path_factory.mktemp("initialised-template")
    url = database_factory.new_template("initialised", copy_of=migrated_template_url)
    data_dir = directory / "data"
    settings = make_settings(data_dir=data_dir, database_url=url, kek=template_kek)
    report = initialise(settings, InitOptions(), FixedClock(now_utc()))
    database_factory.seal(url)
    return InitialisedTemplate(url, data_dir, template_kek, report)


@pytest.fixture
def initialised_report(initialised_template: InitialisedTemplate) -> InitReport:
    """The InitReport of the CA behind `initialised_settings` (CA ids, files written)."""
    report = initialised_template.report
    return dataclasses.replace(report, files=list(report.files))


@pytest.fixture
def initialised_settings(
    request: pytest.FixtureRequest,
    database_factory: DatabaseFactory,
    initialised_template: InitialisedTemplate,
    data_dir: Path,
    tmp_path: Path,
) -> Iterator[Settings]:
    """Settings of an initialised CA of this test's own: a clone of the session's database and
    a copy of its data dir in `data_dir`. The KEK is `template_kek`."""
    if "settings" in request.fixturenames:
        raise pytest.UsageError(
            f"{request.node.nodeid}: use either `settings` (uninitialised) or "
            "`initialised_settings`/`services`, not both; they share `data_dir`"
        )
    shutil.copytree(initialised_template.data_dir, data_dir)
    url = database_factory.clone(initialised_template.database_url, "initialised", tmp_path)
    try:
        yield make_settings(data_dir=data_dir, database_url=url, kek=initialised_template.kek)
    finally:
        database_factory.discard(url)


@pytest.fixture
def services(initialised_settings: Settings, clock: FixedClock) -> Iterator[Services]:
    """Every use case, on this test's initialised CA, with the test's clock."""
    built = Services(initialised_settings, clock=clock)
    try:
        yield built
    finally:
        built.close()


# --- Figures ------------------------------------------------------------------------------------


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """What passing tests printed (fuzzing cases and 5xx counts, certificates checked after a
    crash, the mTLS matrix, ...): shown at the end of every run, CI's included, without -s."""
    printed = [
        (report.nodeid, report.capstdout.strip())
        for report in terminalreporter.stats.get("passed", [])
        if report.when == "call" and report.capstdout.strip()
    ]
    if printed:
        terminalreporter.section("figures printed by passing tests")
        for nodeid, text in printed:
            terminalreporter.write_line(f"{nodeid}:\n{text}\n")
