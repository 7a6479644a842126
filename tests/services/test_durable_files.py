"""Files MintCA writes (issue 12, items 8 and 11): one helper writes keys, the KEK and bundles
through a randomly named temporary file (O_EXCL|O_NOFOLLOW), fsyncs, renames and fsyncs the
directory; the KEK is never overwritten; the SQLite database and its -wal/-shm are 0600; and
a key file that cannot be written leaves no certificate whose key is lost."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import text

from app import files
from app.clock import FixedClock
from app.config import Settings
from app.db.engine import Database
from app.db.migrate import upgrade
from app.files import write_file
from app.services import setup
from app.services.keyring import load_kek
from app.services.setup import InitOptions, initialise

PRIVATE = 0o600


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_write_file_is_private_durable_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(files.os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    old_umask = os.umask(0)  # a permissive umask must not widen a key file
    try:
        assert write_file(tmp_path / "key.pem", b"secret", PRIVATE)
    finally:
        os.umask(old_umask)
    assert (tmp_path / "key.pem").read_bytes() == b"secret"
    assert mode(tmp_path / "key.pem") == PRIVATE, oct(mode(tmp_path / "key.pem"))
    assert len(synced) == 2, "the file and then its directory are fsynced"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key.pem"], "temporary file left"


def test_write_file_replaces_a_planted_symlink_without_following_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"untouched")
    (tmp_path / "key.pem").symlink_to(victim)
    write_file(tmp_path / "key.pem", b"secret", PRIVATE)
    assert victim.read_bytes() == b"untouched"
    assert not (tmp_path / "key.pem").is_symlink()
    assert (tmp_path / "key.pem").read_bytes() == b"secret"


def test_write_file_without_replace_keeps_what_another_process_wrote(tmp_path: Path) -> None:
    (tmp_path / "kek").write_bytes(b"theirs")
    assert not write_file(tmp_path / "kek", b"mine", PRIVATE, replace=False)
    assert (tmp_path / "kek").read_bytes() == b"theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kek"], "temporary file left"


def test_a_failed_write_leaves_neither_file_nor_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_fsync(_fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        write_file(tmp_path / "key.pem", b"secret", PRIVATE)
    assert list(tmp_path.iterdir()) == []


def test_kek_file_is_written_once_with_0600(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", _env_file=None)  # type: ignore[call-arg]
    first = load_kek(settings, create=True)
    path = settings.effective_kek_file
    assert mode(path) == PRIVATE
    assert load_kek(settings, create=True) == first, "an existing KEK is never replaced"
    assert sorted(p.name for p in path.parent.iterdir()) == ["kek"]


def test_sqlite_database_and_its_wal_and_shm_are_0600(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mintca.db'}"
    upgrade(url)
    database = Database(url)
    try:
        with database.write() as session:
            session.execute(text("CREATE TABLE probe (x INTEGER)"))
        with database.read() as session:
            session.execute(text("SELECT count(*) FROM probe")).scalar_one()
        made = sorted(p.name for p in tmp_path.iterdir())
        assert {"mintca.db", "mintca.db-wal", "mintca.db-shm"} <= set(made), made
        for name in made:
            assert mode(tmp_path / name) == PRIVATE, f"{name}: {oct(mode(tmp_path / name))}"
    finally:
        database.dispose()


def test_a_world_readable_database_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "mintca.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    path.chmod(0o644)
    Database(url).dispose()
    assert mode(path) == PRIVATE


@pytest.mark.db
def test_admin_key_that_cannot_be_written_leaves_no_admin_certificate(
    settings: Settings, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On main the key was written after the commit: a failed write locked the admin out."""
    real = setup.write_file

    def failing(path: Path, content: bytes, mode: int, **kwargs: bool) -> bool:
        if path.name == "admin-key.pem":
            raise OSError(28, "No space left on device")
        return real(path, content, mode, **kwargs)

    monkeypatch.setattr(setup, "write_file", failing)
    with pytest.raises(OSError, match="No space"):
        initialise(settings, InitOptions(), clock)
    database = Database(settings.effective_database_url)
    try:
        with database.read() as session:
            count = session.execute(text("SELECT count(*) FROM certificates")).scalar_one()
        assert count == 0, "an admin certificate was stored without its key"
    finally:
        database.dispose()
    assert not (settings.data_dir / "admin.pem").exists()
    assert not (settings.data_dir / "root.pem").exists()

    monkeypatch.setattr(setup, "write_file", real)
    report = initialise(settings, InitOptions(), clock)
    assert report.created, "a rerun starts afresh"
    assert mode(settings.data_dir / "admin-key.pem") == PRIVATE
