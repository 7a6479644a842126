"""How `mintca serve` starts its workers: forked from the parent, which has imported everything
already, unless the parent holds what a child must not inherit (a PKCS#11 module, a thread);
then spawned, each worker a new interpreter. With one worker per allowed CPU, each keeps to its
own CPU."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from app.config import Settings
from app.server.workers import start_method, worker_cpus


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


@pytest.mark.parametrize(
    ("workers", "allowed", "setting", "expected"),
    [
        pytest.param(2, {0, 1}, "auto", [0, 1], id="a worker per CPU: one CPU each"),
        pytest.param(2, {5, 2}, "auto", [2, 5], id="a cpuset: its CPUs, in order"),
        pytest.param(1, {3}, "auto", [3], id="one worker, one CPU"),
        pytest.param(2, {0, 1, 2, 3}, "auto", None, id="fewer workers than CPUs: the scheduler"),
        pytest.param(3, {0, 1}, "auto", None, id="more workers than CPUs: the scheduler"),
        pytest.param(2, {0, 1}, "off", None, id="off"),
        pytest.param(2, set(), "auto", None, id="a platform that cannot pin"),
    ],
)
def test_worker_cpus(
    workers: int, allowed: set[int], setting: str, expected: list[int] | None
) -> None:
    assert worker_cpus(workers, allowed, setting) == expected
