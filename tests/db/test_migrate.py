"""upgrade(), which every `mintca serve` runs: a database at head is left alone without
Alembic; an empty database and one behind head are migrated by Alembic as before, and one at
a revision the scripts do not know is refused by Alembic as before. The head is read from the
migration files without importing them, and must agree with Alembic's."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import create_engine, inspect, text

from app.db.migrate import VERSIONS, alembic_config, is_at_head, script_head, upgrade
from tests.conftest import DatabaseFactory

HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


@pytest.fixture
def empty_url(database_factory: DatabaseFactory, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database with nothing in it, of this test's own."""
    url = database_factory.new_template(re.sub(r"\W", "_", f"migrate_{request.node.name}")[:50])
    yield url
    database_factory.discard(url)


def stored_revisions(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return [
                row[0]
                for row in connection.execute(text("SELECT version_num FROM alembic_version"))
            ]
    finally:
        engine.dispose()


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def run_alembic(url: str, step: Callable[[Config, str], None], revision: str) -> None:
    """Alembic's `step` (command.upgrade or command.downgrade) to `revision`."""
    config = alembic_config()
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            config.attributes["connection"] = connection
            step(config, revision)
            connection.commit()
    finally:
        engine.dispose()


def set_revision(url: str, revision: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    finally:
        engine.dispose()


def test_the_head_read_from_the_files_is_alembics_head() -> None:
    assert HEAD is not None
    assert script_head(VERSIONS) == HEAD


def test_an_empty_database_is_migrated_to_head(empty_url: str) -> None:
    """What `make run` does the first time (`serve` on an empty data dir runs init, which
    runs upgrade)."""
    assert not is_at_head(empty_url)
    upgrade(empty_url)
    assert stored_revisions(empty_url) == [HEAD]
    assert {"cas", "certificates", "audit_log"} <= tables(empty_url)


def test_a_database_behind_head_is_migrated_by_alembic_as_before(
    empty_url: str, database_factory: DatabaseFactory
) -> None:
    behind = ScriptDirectory.from_config(alembic_config()).get_revision(HEAD).down_revision
    assert isinstance(behind, str), "head has one parent"
    run_alembic(empty_url, command.upgrade, behind)
    assert not is_at_head(empty_url)

    upgrade(empty_url)

    assert stored_revisions(empty_url) == [HEAD]
    reference = database_factory.new_template("migrate_reference")
    try:
        upgrade(reference)
        assert tables(empty_url) == tables(reference)
    finally:
        database_factory.discard(reference)


def test_a_database_at_head_is_not_handed_to_alembic(
    empty_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    upgrade(empty_url)

    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("Alembic ran on a database at head")

    monkeypatch.setattr(command, "upgrade", refuse)
    assert is_at_head(empty_url)
    upgrade(empty_url)  # would raise through `refuse`
    assert stored_revisions(empty_url) == [HEAD]


def test_a_database_at_a_revision_the_scripts_do_not_know_is_refused_as_before(
    empty_url: str,
) -> None:
    upgrade(empty_url)
    set_revision(empty_url, "ffff")
    assert not is_at_head(empty_url)
    with pytest.raises(CommandError, match="ffff"):
        upgrade(empty_url)
    assert stored_revisions(empty_url) == ["ffff"], "nothing changed"


# --- Reading the head from the files -----------------------------------------------------------


def write_versions(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir()
    for name, body in files.items():
        (directory / name).write_text(body)
    return directory


def revision_file(revision: str, down: str) -> str:
    return f'"""A migration."""\nrevision: str = "{revision}"\ndown_revision = {down}\n'


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        pytest.param(
            {"a.py": revision_file("a", "None"), "b.py": revision_file("b", '"a"')},
            "b",
            id="a chain: its last revision",
        ),
        pytest.param(
            {
                "a.py": revision_file("a", "None"),
                "b.py": revision_file("b", '"a"'),
                "c.py": revision_file("c", '"a"'),
                "m.py": revision_file("m", '("b", "c")'),
                "__init__.py": "",
            },
            "m",
            id="branches merged: the merge",
        ),
        pytest.param(
            {
                "a.py": revision_file("a", "None"),
                "b.py": revision_file("b", '"a"'),
                "c.py": revision_file("c", '"a"'),
            },
            None,
            id="two heads: Alembic decides",
        ),
        pytest.param(
            {"a.py": revision_file("a", "None"), "b.py": 'revision = "b"\n'},
            None,
            id="no down_revision: Alembic decides",
        ),
        pytest.param(
            {"a.py": revision_file("a", "None"), "b.py": revision_file("b", "compute()")},
            None,
            id="a computed down_revision: Alembic decides",
        ),
        pytest.param(
            {"b.py": revision_file("b", '"a"')},
            None,
            id="a parent that is not there: Alembic decides",
        ),
        pytest.param(
            {"a.py": revision_file("a", "None"), "b.py": "revision = (\n"},
            None,
            id="a file that does not parse: Alembic decides",
        ),
    ],
)
def test_the_head_is_read_from_plain_assignments_or_left_to_alembic(
    files: dict[str, str], expected: str | None, tmp_path: Path
) -> None:
    assert script_head(write_versions(tmp_path / "versions", files)) == expected


def test_crl_der_is_stored_uncompressed_on_postgresql(empty_url: str) -> None:
    """Migration 0016: CRL DER out of line without pglz (which cost 4 of the 6 ms of
    inserting a 600 KB delta CRL under the CA's lock); its downgrade restores the default."""
    if not empty_url.startswith("postgresql"):
        pytest.skip("a column's STORAGE is PostgreSQL's")
    query = text(
        "SELECT c.relname, a.attstorage FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
        " WHERE c.relname IN ('crls', 'crl_parts') AND a.attname = 'der' ORDER BY c.relname"
    )

    def storage() -> list[tuple[str, str]]:
        engine = create_engine(empty_url)
        try:
            with engine.connect() as connection:
                return [(str(table), str(kind)) for table, kind in connection.execute(query)]
        finally:
            engine.dispose()

    upgrade(empty_url)
    assert storage() == [("crl_parts", "e"), ("crls", "e")]
    run_alembic(empty_url, command.downgrade, "0015")
    assert storage() == [("crl_parts", "x"), ("crls", "x")]
