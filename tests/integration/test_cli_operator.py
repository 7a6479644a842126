"""The operator commands as an operator runs them: `python -m app.cli ...` in a subprocess,
against a real `mintca serve` (both listeners, real TLS), with the admin bundle found through
MINTCA_DATA_DIR. What is checked is what a person reads: stdout, stderr, the exit status, and
the files written; the server's own answers (status endpoint, CRLs) confirm the effect."""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from app.config import Settings
from app.services.setup import InitReport
from tests.integration.live import LiveServer

pytestmark = pytest.mark.integration

PROCESS_TIMEOUT = 60  # seconds for any one `mintca` run (each also has httpx's 30 s timeout)
PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\s*", re.DOTALL
)


# --- Helpers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cli:
    """`mintca` as a subprocess: MINTCA_DATA_DIR names the data dir (so --cert, --key and
    --cacert default to its admin bundle and root.pem); the working directory has no `.env`."""

    data_dir: Path
    mtls_url: str
    public_url: str
    workdir: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "MINTCA_DATA_DIR": str(self.data_dir)}
        return subprocess.run(
            [sys.executable, "-m", "app.cli", *args],
            env=env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=PROCESS_TIMEOUT,
            check=False,
        )

    def admin(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A command of the admin API, on the mtls listener."""
        return self.run(*args, "--url", self.mtls_url)

    def public(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A command of the public listener (enroll, crl fetch)."""
        return self.run(*args, "--url", self.public_url)


def succeeded(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, (
        f"{result.args}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def failed(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a failing command prints on stderr (no traceback, nothing on stdout
    that looks like success)."""
    assert result.returncode != 0, f"{result.args} succeeded:\n{result.stdout}"
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr:\n{result.stderr}"
    return lines[0]


def colon_serial(serial: str) -> str:
    """`ab12...` as an operator copies it from openssl: `AB:12:...`."""
    padded = serial.upper().rjust(len(serial) + len(serial) % 2, "0")
    return ":".join(padded[i : i + 2] for i in range(0, len(padded), 2))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def create_token(cli: Cli, *args: str) -> str:
    result = succeeded(cli.admin("token", "create", *args))
    lines = result.stdout.splitlines()
    assert len(lines) == 1, f"the token alone on stdout:\n{result.stdout}"
    return lines[0]


def enroll(cli: Cli, token: str, name: str, out: Path, *args: str) -> str:
    """`mintca enroll`; returns the serial it printed, checked against cert.pem."""
    result = succeeded(
        cli.public("enroll", "--token", token, "--name", name, "--out", str(out), *args)
    )
    match = re.search(r"^serial\s+([0-9a-f]+)$", result.stdout, re.MULTILINE)
    assert match, result.stdout
    certificate = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    assert format(certificate.serial_number, "x") == match[1]
    return match[1]


def status_of(server: LiveServer, serial: str) -> dict[str, object]:
    with server.public_client() as client:
        response = client.get(f"/v1/certificates/{serial}/status")
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def problem_detail(server: LiveServer, path: str, json: dict[str, str] | None = None) -> str:
    """The detail of the problem the admin API answers now to POST `path` (the same request
    the CLI made, repeated: it fails again and changes nothing)."""
    with server.admin_client() as admin:
        response = admin.post(path, json=json if json is not None else {})
    assert response.status_code == 409, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    assert detail
    return detail


def table(stdout: str) -> tuple[list[str], dict[str, list[str]]]:
    """A `cert list` / `ca list` table: the header's words and the rows by first column."""
    header, *rows = stdout.splitlines()
    return header.split(), {row.split()[0]: row.split() for row in rows if row.strip()}


def openssl_crl_text(path: Path) -> str:
    result = subprocess.run(
        ["openssl", "crl", "-inform", "DER", "-in", str(path), "-noout", "-text"],
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def crl_serials(openssl_text: str) -> set[int]:
    return {int(s, 16) for s in re.findall(r"Serial Number:\s*([0-9A-Fa-f]+)", openssl_text)}


@pytest.fixture
def cli(live_server: LiveServer, tmp_path: Path) -> Cli:
    workdir = tmp_path / "cli-cwd"
    workdir.mkdir()
    return Cli(live_server.data_dir, live_server.mtls_url, live_server.public_url, workdir)


@pytest.fixture
def enrolled(cli: Cli, tmp_path: Path) -> str:
    """The serial of a `peer` certificate enrolled through the CLI."""
    token = create_token(cli, "--name", "*.internal")
    return enroll(cli, token, "svc.internal", tmp_path / "svc")


# --- Tokens and enrollment ---------------------------------------------------------------------


def test_token_create_prints_token_on_stdout_and_id_on_stderr_and_enroll_uses_it(
    cli: Cli, tmp_path: Path
) -> None:
    result = succeeded(cli.admin("token", "create", "--name", "*.internal", "--max-uses", "2"))
    (token,) = result.stdout.splitlines()
    assert token.strip() == token
    assert " " not in token
    assert len(token) >= 20
    assert re.match(r"^id \S+", result.stderr.strip()), result.stderr
    assert token not in result.stderr

    serials = []
    for name in ("api.internal", "db.eu.internal"):
        out = tmp_path / name
        serial = enroll(cli, token, name, out)
        serials.append(serial)
        assert stat.S_IMODE((out / "key.pem").stat().st_mode) == 0o600
        certificate = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        assert san.value.get_values_for_type(x509.DNSName) == [name]
        chain = x509.load_pem_x509_certificates((out / "chain.pem").read_bytes())
        assert len(chain) == 2
        assert chain[0].subject == certificate.issuer
    assert len(set(serials)) == 2

    # --max-uses 2: the third enrollment is refused, and the CLI says why.
    used_up = cli.public(
        "enroll", "--token", token, "--name", "x.internal", "--out", str(tmp_path / "x")
    )
    assert "401" in failed(used_up)
    assert not (tmp_path / "x" / "key.pem").exists()


# --- cert list / show --------------------------------------------------------------------------


def test_cert_list_shows_a_table_with_the_enrolled_serial_and_filters_by_status(
    cli: Cli, enrolled: str
) -> None:
    header, rows = table(succeeded(cli.admin("cert", "list")).stdout)
    assert header[:3] == ["SERIAL", "STATUS", "PROFILE"]
    assert "NAMES" in header
    assert enrolled in rows
    assert rows[enrolled][1:3] == ["good", "peer"]
    assert rows[enrolled][-1] == "svc.internal"
    assert len(rows) >= 3  # init's server and admin certificates are listed too

    header, rows = table(succeeded(cli.admin("cert", "list", "--status", "revoked")).stdout)
    assert header[0] == "SERIAL"
    assert rows == {}

    header, rows = table(succeeded(cli.admin("cert", "list", "--q", "svc.internal")).stdout)
    assert list(rows) == [enrolled]


def test_cert_show_prints_details_and_the_pem_of_that_certificate(cli: Cli, enrolled: str) -> None:
    for spelling in (enrolled, colon_serial(enrolled)):
        stdout = succeeded(cli.admin("cert", "show", spelling)).stdout
        fields = dict(
            line.split(":", 1) for line in stdout.splitlines() if re.match(r"^[a-z_]+:\s", line)
        )
        assert fields["serial"].strip() == enrolled
        assert fields["status"].strip() == "good"
        assert fields["profile"].strip() == "peer"
        assert fields["names"].strip() == "svc.internal"
        (pem,) = PEM_CERTIFICATE.findall(stdout.encode())
        certificate = x509.load_pem_x509_certificate(pem)
        assert certificate.serial_number == int(enrolled, 16)


# --- Revocation --------------------------------------------------------------------------------


def test_cert_revoke_revokes_and_a_second_revoke_fails_with_the_conflict_detail(
    cli: Cli, live_server: LiveServer, enrolled: str
) -> None:
    result = succeeded(cli.admin("cert", "revoke", enrolled, "--reason", "keyCompromise"))
    assert enrolled in result.stdout
    assert "keyCompromise" in result.stdout

    status = status_of(live_server, enrolled)
    assert status["status"] == "revoked"
    assert status["reason"] == "keyCompromise"
    _, rows = table(succeeded(cli.admin("cert", "list", "--status", "revoked")).stdout)
    assert list(rows) == [enrolled]

    again = failed(cli.admin("cert", "revoke", enrolled, "--reason", "keyCompromise"))
    detail = problem_detail(
        live_server, f"/admin/certificates/{enrolled}/revoke", {"reason": "keyCompromise"}
    )
    assert "409" in again
    assert detail in again
    assert status_of(live_server, enrolled)["reason"] == "keyCompromise"


def test_cert_revoke_all_dry_run_then_for_real(
    cli: Cli, live_server: LiveServer, tmp_path: Path
) -> None:
    token = create_token(cli, "--name", "*.internal", "--max-uses", "3")
    batch = sorted(
        enroll(cli, token, f"bulk-{n}.internal", tmp_path / f"bulk-{n}") for n in range(2)
    )
    other = enroll(cli, token, "keep.internal", tmp_path / "keep")

    dry = succeeded(
        cli.admin("cert", "revoke", "--all", "--q", "bulk-", "--reason", "superseded", "--dry-run")
    )
    assert dry.stdout.splitlines() == ["would revoke 2 certificate(s)", *batch], dry.stdout
    assert {status_of(live_server, s)["status"] for s in batch} == {"good"}

    done = succeeded(cli.admin("cert", "revoke", "--all", "--q", "bulk-", "--reason", "superseded"))
    assert done.stdout.splitlines() == ["revoked 2 certificate(s)", *batch], done.stdout
    assert re.fullmatch(r"CA [0-9a-f]+: CRL \d+\n", done.stderr), done.stderr
    assert {status_of(live_server, s)["reason"] for s in batch} == {"superseded"}
    assert status_of(live_server, other)["status"] == "good"

    refused = failed(cli.admin("cert", "revoke", "--all", "--reason", "superseded"))
    assert "400" in refused
    assert "filter is empty" in refused


def test_hold_and_unhold_with_an_uppercase_colon_separated_serial(
    cli: Cli, live_server: LiveServer, enrolled: str
) -> None:
    spelled = colon_serial(enrolled)
    assert ":" in spelled
    assert spelled != spelled.lower()

    result = succeeded(cli.admin("cert", "revoke", spelled, "--reason", "certificateHold"))
    assert enrolled in result.stdout
    status = status_of(live_server, enrolled)
    assert status["status"] == "revoked"
    assert status["reason"] == "certificateHold"

    result = succeeded(cli.admin("cert", "unhold", spelled))
    assert enrolled in result.stdout
    assert "good" in result.stdout
    status = status_of(live_server, enrolled)
    assert status["status"] == "good"
    assert status["reason"] is None

    not_on_hold = failed(cli.admin("cert", "unhold", enrolled))
    detail = problem_detail(live_server, f"/admin/certificates/{enrolled}/unhold")
    assert "409" in not_on_hold
    assert detail in not_on_hold
    assert status_of(live_server, enrolled)["status"] == "good"


# --- CAs and CRLs ------------------------------------------------------------------------------


def test_ca_list_and_crl_fetch_full_and_delta(
    cli: Cli, live_server: LiveServer, initialised_report: InitReport, enrolled: str, tmp_path: Path
) -> None:
    root_id, issuing_id = initialised_report.root_ca_id, initialised_report.issuing_ca_id
    stdout = succeeded(cli.admin("ca", "list")).stdout
    header, rows = table(stdout)
    assert header[:3] == ["CA", "ID", "KIND"]
    assert set(rows) == {root_id, issuing_id}
    assert rows[root_id][1] == "root"
    assert rows[root_id][2] != "yes"
    assert rows[issuing_id][1:3] == ["issuing", "yes"]

    succeeded(cli.admin("cert", "revoke", enrolled, "--reason", "keyCompromise"))

    full = tmp_path / "issuing.crl"
    result = succeeded(cli.public("crl", "fetch", issuing_id, "--out", str(full)))
    assert str(full) in result.stdout
    text = openssl_crl_text(full)
    assert int(enrolled, 16) in crl_serials(text)
    assert "Key Compromise" in text
    assert "Delta CRL Indicator" not in text
    crl = x509.load_der_x509_crl(full.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(int(enrolled, 16)) is not None

    delta = tmp_path / "issuing-delta.crl"
    succeeded(cli.public("crl", "fetch", issuing_id, "--delta", "--out", str(delta)))
    delta_text = openssl_crl_text(delta)
    assert "Delta CRL Indicator" in delta_text
    assert int(enrolled, 16) in crl_serials(delta_text)

    root_crl = tmp_path / "root.crl"
    succeeded(cli.public("crl", "fetch", root_id, "--out", str(root_crl)))
    assert crl_serials(openssl_crl_text(root_crl)) == set()


# --- Error paths -------------------------------------------------------------------------------


def test_an_unreachable_url_fails_with_one_line_and_no_traceback(
    initialised_settings: Settings, tmp_path: Path
) -> None:
    port = free_port()  # bound and released: nothing listens there
    cli = Cli(
        initialised_settings.data_dir,
        f"https://localhost:{port}",
        f"http://127.0.0.1:{port}",
        tmp_path,
    )
    for result in (
        cli.admin("cert", "list"),
        cli.admin("token", "create", "--name", "a.internal"),
        cli.public("crl", "fetch", "anything", "--out", str(tmp_path / "x.crl")),
    ):
        line = failed(result)
        assert "cannot reach" in line
        assert str(port) in line
        assert result.stdout.count("\n") <= 1  # at most the table header of `cert list`
    assert not (tmp_path / "x.crl").exists()


def test_a_client_certificate_on_an_admin_command_fails_with_the_403_detail(
    cli: Cli, live_server: LiveServer, tmp_path: Path
) -> None:
    token = create_token(cli, "--profile", "client", "--name", "worker.internal")
    out = tmp_path / "client"
    enroll(cli, token, "worker.internal", out, "--profile", "client")
    cert, key = out / "cert.pem", out / "key.pem"

    commands = {  # each command, and the request it makes (the detail names the route's role)
        ("cert", "list"): ("GET", "/admin/certificates", None),
        ("token", "create", "--name", "b.internal"): ("POST", "/admin/tokens", {"names": ["b"]}),
        ("ca", "list"): ("GET", "/admin/cas", None),
    }

    for args, (method, path, body) in commands.items():
        with live_server.mtls_client(cert, key) as client:
            response = client.request(method, path, json=body)
        assert response.status_code == 403, response.text
        detail = response.json()["detail"]
        line = failed(cli.admin(*args, "--cert", str(cert), "--key", str(key)))
        assert "403" in line, line
        assert detail in line, line
