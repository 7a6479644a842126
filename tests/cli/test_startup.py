"""The CLI starts fast because it imports only what a command uses: importing app.cli.main
and rendering help screens never loads the server stack or the database layer. A guarantee
on what is imported, not a timing test (bench/cli.py measures the time)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# The server and database stack, and the libraries a command imports when it runs.
HEAVY = ("fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "prometheus_client")
# Needed by commands when they run (HTTP, keys, settings), never to list or describe them.
DEFERRED = ("httpx", "cryptography", "pydantic_settings")

REPORT = "import json, sys; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"


def imported_after(code: str) -> set[str]:
    """Top-level packages in sys.modules after running `code` in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-c", f"{code}\n{REPORT}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def run_cli(*argv: str) -> str:
    """Code that runs `mintca argv` in-process and swallows its SystemExit."""
    return (
        "import sys\n"
        "from app.cli.main import main\n"
        f"sys.argv = ['mintca', *{list(argv)!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
    )


def test_importing_the_cli_loads_no_heavy_package() -> None:
    loaded = imported_after("import app.cli.main")

    assert not loaded & set(HEAVY + DEFERRED), sorted(loaded & set(HEAVY + DEFERRED))


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(("--help",), id="mintca --help"),
        pytest.param(("enroll", "--help"), id="mintca enroll --help"),
        pytest.param(("cert", "list", "--help"), id="mintca cert list --help"),
        pytest.param(("token", "create", "--help"), id="mintca token create --help"),
    ],
)
def test_help_screens_load_no_heavy_package(argv: tuple[str, ...]) -> None:
    loaded = imported_after(run_cli(*argv))

    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    assert "cryptography" not in loaded, "help should not need cryptography"
