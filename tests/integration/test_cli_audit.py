"""`mintca audit list|verify` against a real `mintca serve`: after a run of every action the
chain verifies; editing, deleting or reordering one row in the database makes `verify` exit 1
and name the first entry that fails; putting the row back makes it hold again."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from sqlalchemy import delete, insert, select, update

from app.db.engine import Database
from app.db.models import AuditChainRecord, AuditRecord
from tests.integration.live import LiveServer
from tests.integration.test_cli_operator import Cli, create_token, enroll, succeeded

# Each test runs a dozen CLI processes against a live server (15-25 s on the shared machine).
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def cli(live_server: LiveServer, tmp_path: Path) -> Cli:
    workdir = tmp_path / "cli-cwd"
    workdir.mkdir()
    return Cli(live_server.data_dir, live_server.mtls_url, live_server.public_url, workdir)


@pytest.fixture
def database(live_server: LiveServer) -> Iterator[Database]:
    db = Database(live_server.settings.effective_database_url, pool_size=1)
    try:
        yield db
    finally:
        db.dispose()


def ask_ocsp(server: LiveServer, out: Path) -> None:
    """An OCSP request for the enrolled certificate (the responder's issuance is audited)."""
    certificate = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    issuer = x509.load_pem_x509_certificates((out / "chain.pem").read_bytes())[0]
    der = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(certificate, issuer, hashes.SHA256())
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    with server.public_client() as client:
        answer = client.post(
            "/ocsp", content=der, headers={"Content-Type": "application/ocsp-request"}
        )
    assert answer.status_code == 200, answer.text
    assert ocsp.load_der_ocsp_response(answer.content).response_status.name == "SUCCESSFUL"


@dataclass
class Run:
    """What the run of every action left behind, for the assertions."""

    token_id: str = ""
    serial: str = ""


def run_every_action(cli: Cli, server: LiveServer, tmp_path: Path) -> Run:
    """Each action an operator or service can take, through the CLI where it has a command.
    Add new actions here (renewal, rotation, bulk revocation) as they are built."""
    run = Run()
    token = create_token(cli, "--name", "*.internal", "--max-uses", "2")
    out = tmp_path / "svc"
    run.serial = enroll(cli, token, "svc.internal", out)
    steps: list[tuple[str, Callable[[], object]]] = [
        ("hold", lambda: cli.admin("cert", "revoke", run.serial, "--reason", "certificateHold")),
        ("unhold", lambda: cli.admin("cert", "unhold", run.serial)),
        ("revoke", lambda: cli.admin("cert", "revoke", run.serial, "--reason", "keyCompromise")),
        (
            "crl fetch",
            lambda: cli.public("crl", "fetch", *ca_id(server), "--out", str(tmp_path / "c")),
        ),
    ]
    for _name, step in steps:
        result = step()
        assert isinstance(result, subprocess.CompletedProcess)
        succeeded(result)
    ask_ocsp(server, out)
    listed = json.loads(
        succeeded(cli.admin("audit", "list", "--action", "token.create", "--json")).stdout
    )
    run.token_id = listed["target"]
    return run


def ca_id(server: LiveServer) -> list[str]:
    with server.admin_client() as admin:
        cas = admin.get("/admin/cas").json()
    return [next(c["ca_id"] for c in cas if c["active"])]


def entries(cli: Cli, *args: str) -> list[dict[str, Any]]:
    result = succeeded(cli.admin("audit", "list", "--json", "--limit", "1000", *args))
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_every_action_is_audited_and_the_chain_verifies(
    cli: Cli, live_server: LiveServer, tmp_path: Path
) -> None:
    run = run_every_action(cli, live_server, tmp_path)

    verified = succeeded(cli.admin("audit", "verify"))

    everything = entries(cli)
    actions = [e["action"] for e in everything]
    assert actions[:5] == [
        "certificate.issue",  # the OCSP responder, issued by MintCA itself
        "certificate.revoke",
        "certificate.unhold",
        "certificate.revoke",
        "certificate.issue",
    ], actions
    assert actions[5:7] == ["token.create", "certificate.issue"], actions
    assert "ca.init" in actions[7:], actions
    assert [e["id"] for e in everything] == sorted((e["id"] for e in everything), reverse=True)
    head = everything[0]
    assert verified.stdout.strip() == (
        f"audit chain holds: {len(everything)} entries, head entry {head['id']} {head['hash']}"
    )
    assert verified.stderr == ""
    issue = next(
        e for e in everything if e["target"] == run.serial and e["action"] == "certificate.issue"
    )
    assert issue["actor"] == f"token:{run.token_id}", issue
    assert everything[1]["details"]["reason"] == "keyCompromise", everything[1]


def moment(entry: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(entry["at"])


def test_audit_list_filters_and_pages(cli: Cli, live_server: LiveServer, tmp_path: Path) -> None:
    run = run_every_action(cli, live_server, tmp_path)
    everything = entries(cli)

    revokes = entries(cli, "--action", "certificate.revoke")
    on_serial = entries(cli, "--target", run.serial)
    by_token = entries(cli, "--actor", run.token_id)
    by_admin = entries(cli, "--actor", "CN=admin")
    middle = everything[3]["at"]
    since = entries(cli, "--since", middle)
    until = entries(cli, "--until", middle)
    nothing = entries(cli, "--since", "2999-01-01T00:00:00Z")
    two = entries(cli, "--limit", "2")
    table = succeeded(cli.admin("audit", "list", "--limit", "3")).stdout.splitlines()

    assert [e["action"] for e in revokes] == ["certificate.revoke"] * 2, revokes
    assert {e["target"] for e in on_serial} == {run.serial}
    assert len(on_serial) == 4, on_serial  # issue, hold, unhold, revoke
    assert [e["action"] for e in by_token] == ["certificate.issue"], by_token
    assert {e["action"] for e in by_admin} == {
        "token.create",
        "certificate.revoke",
        "certificate.unhold",
    }, by_admin
    assert since, "the middle entry itself is since it"
    assert until, "init's entries are older"
    assert all(moment(e) >= moment(everything[3]) for e in since), since
    assert all(moment(e) < moment(everything[3]) for e in until), until
    assert len(since) + len(until) == len(everything)
    assert nothing == []
    assert two == everything[:2]
    assert table[0].split() == ["ID", "AT", "ACTION", "TARGET", "ACTOR"], table
    assert [line.split()[0] for line in table[1:]] == [str(e["id"]) for e in everything[:3]]


@contextmanager
def tampered(db: Database, change: Callable[[Any], None]) -> Iterator[None]:
    """Apply `change` to the audit tables, and put every row back afterwards."""
    with db.read() as session:
        saved = [dict(row._mapping) for row in session.execute(select(AuditRecord.__table__))]
        saved_head = [
            dict(row._mapping) for row in session.execute(select(AuditChainRecord.__table__))
        ]
    with db.write() as session:
        change(session)
    try:
        yield
    finally:
        with db.write() as session:
            session.execute(delete(AuditRecord.__table__))
            session.execute(insert(AuditRecord.__table__), saved)
            session.execute(delete(AuditChainRecord.__table__))
            session.execute(insert(AuditChainRecord.__table__), saved_head)


def edit(entry_id: int) -> Callable[[Any], None]:
    def change(session: Any) -> None:
        table = AuditRecord.__table__
        session.execute(
            update(table).where(table.c.id == entry_id).values(details={"reason": "unspecified"})
        )

    return change


def remove(entry_id: int) -> Callable[[Any], None]:
    def change(session: Any) -> None:
        table = AuditRecord.__table__
        session.execute(delete(table).where(table.c.id == entry_id))

    return change


def remove_head(session: Any) -> None:
    session.execute(delete(AuditChainRecord.__table__))


def swap(entry_id: int) -> Callable[[Any], None]:
    """Exchange the positions of this entry and the next one."""

    def change(session: Any) -> None:
        table = AuditRecord.__table__
        session.execute(update(table).where(table.c.id == entry_id).values(id=-1))
        session.execute(update(table).where(table.c.id == entry_id + 1).values(id=entry_id))
        session.execute(update(table).where(table.c.id == -1).values(id=entry_id + 1))

    return change


def test_editing_deleting_or_reordering_one_row_makes_verify_name_it(
    cli: Cli, live_server: LiveServer, database: Database, tmp_path: Path
) -> None:
    run_every_action(cli, live_server, tmp_path)
    everything = entries(cli)
    newest = everything[0]["id"]
    revoke = next(e["id"] for e in everything if e["action"] == "certificate.revoke")
    cases = [
        ("edit", edit(revoke), revoke),
        ("delete", remove(revoke), revoke + 1),
        ("delete the newest", remove(newest), newest),
        ("reorder", swap(revoke - 1), revoke - 1),
        ("edit the first", edit(everything[-1]["id"]), everything[-1]["id"]),
        ("delete the chain head", remove_head, newest),
    ]
    for name, change, first_bad in cases:
        with tampered(database, change):
            result = cli.admin("audit", "verify", "--page-size", "3")  # pages end mid-chain
        assert result.returncode == 1, f"{name}: {result.stdout}{result.stderr}"
        assert result.stdout == f"entry {first_bad}\n", f"{name}: {result.stdout}"
        assert f"broken at entry {first_bad}" in result.stderr, f"{name}: {result.stderr}"
        assert "Traceback" not in result.stderr
        succeeded(cli.admin("audit", "verify", "--page-size", "3"))  # the row is back
