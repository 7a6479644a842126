"""The log formatters: one JSON object per line with uvicorn's access fields, and the last
line of defence that redacts token secrets, Authorization values and PEM private keys."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from app.ca.keys import private_key_pem
from app.server.logs import JSONFormatter, TextFormatter, redact

TOKEN = "mintca_" + "Ab3_-x" * 7
KEY_PEM = private_key_pem(ec.generate_private_key(ec.SECP256R1())).decode()


def record(name: str, msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError(f"bad token {TOKEN}")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord(name, logging.INFO, __file__, 1, msg, args or None, exc_info)


def test_json_lines_carry_uvicorn_access_fields() -> None:
    line = JSONFormatter().format(
        record(
            "uvicorn.access",
            '%s - "%s %s HTTP/%s" %d',
            "127.0.0.1:5",
            "GET",
            "/ocsp/MEow",
            "1.1",
            200,
        )
    )

    entry = json.loads(line)
    assert "\n" not in line
    assert entry["message"] == '127.0.0.1:5 - "GET /ocsp/MEow HTTP/1.1" 200'
    assert (entry["client"], entry["method"], entry["path"], entry["status"]) == (
        "127.0.0.1:5",
        "GET",
        "/ocsp/MEow",
        200,
    )
    assert entry["logger"] == "uvicorn.access"
    assert entry["level"] == "INFO"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        pytest.param(f"token {TOKEN} used", TOKEN.removeprefix("mintca_"), id="token secret"),
        pytest.param(
            "headers [(b'authorization', b'Bearer abc.DEF-123')]", "abc.DEF-123", id="bearer"
        ),
        pytest.param(f"key:\n{KEY_PEM}", KEY_PEM.splitlines()[1], id="PEM private key"),
    ],
)
def test_secrets_are_redacted_in_both_formats(text: str, secret: str) -> None:
    for formatter in (JSONFormatter(), TextFormatter()):
        line = formatter.format(record("app.x", "%s", text))
        assert secret not in line, line
        assert "[redacted]" in line, line
    assert secret not in redact(json.dumps(text)), "also inside a JSON string"


def test_exceptions_are_one_json_line_and_redacted() -> None:
    line = JSONFormatter().format(record("app.x", "failed", exc=True))

    entry = json.loads(line)
    assert "Traceback" in entry["exception"]
    assert TOKEN not in line
