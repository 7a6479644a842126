"""The directory where worker processes keep their prometheus-client values, so /metrics
sums the events of every worker whichever one answers (prometheus-client multiprocess mode).

stdlib only at import: `mintca serve` calls prepare_metrics_dir() before anything imports
prometheus-client, which reads PROMETHEUS_MULTIPROC_DIR once, when first imported."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
from pathlib import Path

from app.errors import ConfigurationError

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The files prometheus-client writes there: `<type>_<pid>.db`, gauges `gauge_<mode>_<pid>.db`.
_VALUE_FILES = re.compile(r"(counter|histogram|summary|gauge_\w+?)_\d+\.db")


def prepare_metrics_dir() -> Path:
    """Use PROMETHEUS_MULTIPROC_DIR if set, emptied of an earlier run's values; else make a
    private temporary directory, removed when this process exits. Workers inherit it.

    Raises:
        ConfigurationError: the directory holds files that are not prometheus-client's (the
            scrape reads every `*.db` there, and nothing else must be deleted).
    """
    configured = os.environ.get(MULTIPROC_DIR_ENV)
    if configured:
        directory = Path(configured)
        directory.mkdir(parents=True, exist_ok=True)
        entries = list(directory.iterdir())
        foreign = sorted(p.name for p in entries if not _VALUE_FILES.fullmatch(p.name))
        if foreign:
            raise ConfigurationError(
                f"{MULTIPROC_DIR_ENV}={directory} must be a directory of its own for metrics "
                f"files; it holds {', '.join(foreign[:5])}"
            )
        for stale in entries:  # a previous run's counters must not add up
            stale.unlink()
        return directory
    directory = Path(tempfile.mkdtemp(prefix="mintca-metrics-"))
    os.environ[MULTIPROC_DIR_ENV] = str(directory)
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return directory


def mark_worker_dead(pid: int | None) -> None:
    """Drop a finished worker's live gauges; its counters and histograms stay in the sums."""
    if pid is None or not os.environ.get(MULTIPROC_DIR_ENV):
        return
    from prometheus_client.multiprocess import mark_process_dead

    mark_process_dead(pid)  # type: ignore[no-untyped-call]  # unannotated in prometheus-client
