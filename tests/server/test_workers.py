"""How `mintca serve` starts its workers: forked from the parent, which has imported everything
already, unless the parent holds what a child must not inherit (a PKCS#11 module, a thread);
then spawned, each worker a new interpreter."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from app.config import Settings
from app.server.workers import start_method


@contextmanager
def another_thread() -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="test-idle")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def settings_with(tmp_path: Path, **values: object) -> Settings:
    return Settings(data_dir=tmp_path, kek_file=None, _env_file=None, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("values", "thread", "expected"),
    [
        pytest.param({}, False, "fork", id="plain: forked"),
        pytest.param(
            {"pkcs11_module": "/usr/lib/softhsm/libsofthsm2.so", "pkcs11_token_label": "ca"},
            False,
            "spawn",
            id="PKCS#11 token: spawned",
        ),
        pytest.param({}, True, "spawn", id="a thread in the parent: spawned"),
    ],
)
def test_workers_are_forked_unless_the_parent_holds_what_a_child_must_not_inherit(
    values: dict[str, object], thread: bool, expected: str, tmp_path: Path
) -> None:
    settings = settings_with(tmp_path, **values)
    assert threading.active_count() == 1, f"threads before the test: {threading.enumerate()}"
    if thread:
        with another_thread():
            method = start_method(settings)
    else:
        method = start_method(settings)
    assert method == expected
