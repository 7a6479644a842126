"""Durable, private file writes: the one way MintCA writes keys, the KEK and bundles to disk
(usable from any layer, like app.config). A crash leaves the old file or the new one, never
a torn or empty one; nothing follows a planted symlink; a key file is never readable by
others, not even for a moment."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

PRIVATE = 0o600
PUBLIC = 0o644


def write_file(path: Path, content: bytes, mode: int = PRIVATE, *, replace: bool = True) -> bool:
    """Write `content` to `path` with `mode`: a temporary file with a random name in the same
    directory (O_CREAT|O_EXCL|O_NOFOLLOW, created with its final mode), fsync, rename into
    place, fsync the directory (so the rename itself survives a power cut).

    With `replace=False` an existing `path` is kept (link(2) fails if the name exists), for
    files that other processes may have made first, such as the KEK: returns False then.
    """
    temporary = _staged(path, content, mode)
    try:
        if replace:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)
            except FileExistsError:
                return False
            finally:
                os.unlink(temporary)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    fsync_directory(path.parent)
    return True


def write_files(files: list[tuple[Path, bytes, int]]) -> None:
    """Write several files as `write_file` does, but stage (write and fsync) all of them before
    renaming any: a key and its certificate are replaced within moments of each other, and a
    failure while staging leaves every old file as it was."""
    staged: list[tuple[Path, Path]] = []
    try:
        for path, content, mode in files:
            staged.append((_staged(path, content, mode), path))
        for temporary, path in staged:
            os.replace(temporary, path)
        staged = []
    finally:
        for temporary, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
    for directory in {path.parent for path, _, _ in files}:
        fsync_directory(directory)


def _staged(path: Path, content: bytes, mode: int) -> Path:
    """`content` written and fsynced to a new, unpredictably named file beside `path`."""
    temporary = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temporary, flags, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)  # os.open's mode passes through the umask
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return temporary


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_private_file(path: Path) -> None:
    """Create `path` empty with mode 0600 if it does not exist (never through a symlink), and
    take away group and other permissions if it does: e.g. a SQLite file before SQLite opens
    it, since SQLite gives its -wal and -shm files the database file's mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, PRIVATE)
    finally:
        os.close(fd)
