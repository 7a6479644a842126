"""A real `mintca serve` on 127.0.0.1 per test: both listeners, real TLS, its own database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.config import Settings
from tests.integration.live import LiveServer, start_server, stop_server


@pytest.fixture
def live_server(initialised_settings: Settings, tmp_path: Path) -> Iterator[LiveServer]:
    process, server = start_server(initialised_settings, tmp_path / "serve.log")
    try:
        yield server
    finally:
        stop_server(process)
