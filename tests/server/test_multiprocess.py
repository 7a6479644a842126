"""The metrics directory `mintca serve` prepares before its workers start: a given directory
is emptied of an earlier run's values and must hold nothing else; without one, a private
temporary directory is made and named in the environment the workers inherit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.errors import ConfigurationError
from app.server.multiprocess import MULTIPROC_DIR_ENV, prepare_metrics_dir

EARLIER_RUN = ("counter_41.db", "histogram_41.db", "gauge_livesum_41.db", "summary_7.db")


def test_a_given_directory_is_emptied_of_an_earlier_runs_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in EARLIER_RUN:
        (tmp_path / name).write_bytes(b"old values")
    monkeypatch.setenv(MULTIPROC_DIR_ENV, str(tmp_path))

    assert prepare_metrics_dir() == tmp_path
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["mintca.db", "notes.txt", "counter_x.db"])
def test_a_directory_holding_anything_else_is_refused_and_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    (tmp_path / name).write_bytes(b"not prometheus-client's")
    (tmp_path / "counter_41.db").write_bytes(b"old values")
    monkeypatch.setenv(MULTIPROC_DIR_ENV, str(tmp_path))

    with pytest.raises(ConfigurationError, match=name):
        prepare_metrics_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "counter_41.db"])


def test_without_a_directory_a_private_one_is_made_for_the_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(MULTIPROC_DIR_ENV, "")  # unset for this test; restored afterwards

    directory = prepare_metrics_dir()

    assert directory.is_dir()
    assert list(directory.iterdir()) == []
    assert os.environ[MULTIPROC_DIR_ENV] == str(directory)
    assert directory.name.startswith("mintca-metrics-")
