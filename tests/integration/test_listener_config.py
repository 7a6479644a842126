"""Both listeners get the limits deliberately (issue 12, Limits): the protocol class that
times out request heads, and uvicorn's keep-alive, concurrency and h11 head-size settings."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from app.server.limits import (
    KEEP_ALIVE_SECONDS,
    MAX_CONCURRENCY,
    MAX_HEAD_BYTES,
    LimitedHttpToolsProtocol,
)
from app.server.listeners import server_configs
from app.server.tls_scope import PeerCertHttpToolsProtocol
from app.services.container import Services

pytestmark = pytest.mark.db


def test_both_listeners_carry_the_limits(services: Services, tmp_path: Path) -> None:
    settings = services.settings.model_copy(update={"header_timeout": timedelta(seconds=7)})
    for config in server_configs(services, settings, tmp_path / "bundle.pem"):
        protocol = config.http
        assert isinstance(protocol, type), protocol
        assert issubclass(protocol, LimitedHttpToolsProtocol), protocol
        assert issubclass(protocol, PeerCertHttpToolsProtocol), "the peer certificate still flows"
        assert protocol.header_timeout == 7.0
        assert config.timeout_keep_alive == KEEP_ALIVE_SECONDS
        assert config.limit_concurrency == MAX_CONCURRENCY
        assert config.h11_max_incomplete_event_size == MAX_HEAD_BYTES
