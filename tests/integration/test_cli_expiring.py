"""`mintca cert list --expiring 14d` against a real server: the valid certificates that end
within the window, soonest first; revoked and longer-lived ones are left out."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.integration.live import LiveServer
from tests.integration.test_cli_operator import Cli, create_token, enroll, succeeded, table

pytestmark = pytest.mark.integration


@pytest.fixture
def cli(live_server: LiveServer, tmp_path: Path) -> Cli:
    workdir = tmp_path / "cli-cwd"
    workdir.mkdir()
    return Cli(live_server.data_dir, live_server.mtls_url, live_server.public_url, workdir)


@pytest.mark.slow
def test_expiring_lists_valid_certificates_ending_in_the_window_soonest_first(
    cli: Cli, tmp_path: Path
) -> None:
    token = create_token(cli, "--name", "*.internal", "--max-uses", "4")
    serials = {
        days: enroll(cli, token, f"d{days}.internal", tmp_path / str(days), "--validity-days", days)
        for days in ("3", "10", "5", "60")
    }
    succeeded(cli.admin("cert", "revoke", serials["3"], "--reason", "superseded"))
    # OCSP makes the CA's responder certificate (7 days): MintCA renews it, so it is not listed.
    assert "good" in ocsp_status(cli, tmp_path / "60")

    result = succeeded(cli.admin("cert", "list", "--expiring", "14d"))

    header, rows = table(result.stdout)
    assert header[0] == "SERIAL", result.stdout
    assert list(rows) == [serials["5"], serials["10"]], result.stdout
    assert all(row[1] == "good" for row in rows.values()), result.stdout
    wider = table(succeeded(cli.admin("cert", "list", "--expiring", "1440h")).stdout)[1]
    assert serials["60"] in wider, "60 days is within 1440 hours"


def ocsp_status(cli: Cli, enrolled: Path) -> str:
    result = subprocess.run(
        [
            "openssl",
            "ocsp",
            "-issuer",
            str(enrolled / "chain.pem"),
            "-cert",
            str(enrolled / "cert.pem"),
            "-url",
            f"{cli.public_url}/ocsp",
            "-CAfile",
            str(cli.data_dir / "root.pem"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("duration", ["soon", "-3d", "14w"])
def test_expiring_refuses_what_is_not_a_duration(tmp_path: Path, duration: str) -> None:
    # Refused before any request: no server is needed (nothing listens on port 9).
    cli = Cli(tmp_path, "https://127.0.0.1:9", "http://127.0.0.1:9", tmp_path)

    result = cli.admin("cert", "list", "--expiring", duration)

    assert result.returncode == 2, result.stdout + result.stderr
    assert "--expiring" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
