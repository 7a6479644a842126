"""Logs of a full run against a real `mintca serve` with two workers, DEBUG level, JSON
format: every line is one JSON object (uvicorn's own lines included), and no line holds a
token secret, a private key (PEM, base64 or hex of its DER) or a KEK.

To cover a new action, add a step to `STEPS`; to look for a new kind of secret, add it to
`secrets_of_the_run`."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from sqlalchemy import select

from app.ca.keys import PrivateKey, parse_kek, unwrap_private_key
from app.config import Settings
from app.db.engine import Database
from app.db.models import CARecord, ResponderRecord
from tests.integration.live import LiveServer, start_server, stop_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROCESS_TIMEOUT = 60


@dataclass
class Run:
    """A CA run from an empty data dir: its server, and what the steps left behind."""

    settings: Settings
    workdir: Path
    server: LiveServer | None = None
    outputs: list[str] = field(default_factory=list)  # every CLI stdout/stderr, but tokens
    tokens: list[str] = field(default_factory=list)
    eab_keys: list[str] = field(default_factory=list)  # ACME EAB HMAC keys, shown once
    keks: list[bytes] = field(default_factory=list)
    serial: str = ""

    def mintca(self, *args: str, listener: str | None = None) -> str:
        extra = []
        if listener is not None:
            urls = {"mtls": self.live.mtls_url, "public": self.live.public_url}
            extra = ["--url", urls[listener]]
        result = subprocess.run(
            [sys.executable, "-m", "app.cli", *args, *extra],
            env={
                **os.environ,
                "MINTCA_DATA_DIR": str(self.settings.data_dir),
                "MINTCA_DATABASE_URL": self.settings.effective_database_url,
            },
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=PROCESS_TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, f"{args}: {result.stdout}{result.stderr}"
        self.outputs.append(result.stderr)
        return result.stdout

    @property
    def live(self) -> LiveServer:
        assert self.server is not None
        return self.server

    def read_kek(self) -> None:
        self.keks.append(parse_kek((self.settings.data_dir / "kek").read_text()))


def init(run: Run) -> None:
    run.outputs.append(run.mintca("init"))
    run.read_kek()


def token_create(run: Run) -> None:
    token = run.mintca("token", "create", "--name", "*.internal", listener="mtls").strip()
    run.tokens.append(token)


def enroll(run: Run) -> None:
    out = run.workdir / "svc"
    stdout = run.mintca(
        "enroll", "--token", run.tokens[-1], "--name", "svc.internal", "--out", str(out),
        listener="public",
    )  # fmt: skip
    run.outputs.append(stdout)
    run.serial = re.search(r"^serial\s+([0-9a-f]+)$", stdout, re.MULTILINE)[1]  # type: ignore[index]


def renew(run: Run) -> None:
    svc, out = run.workdir / "svc", run.workdir / "svc-renewed"
    files = ["--cert", str(svc / "cert.pem"), "--key", str(svc / "key.pem"), "--out", str(out)]
    run.outputs.append(run.mintca("renew", *files, listener="mtls"))


def ca_rotate(run: Run) -> None:
    run.outputs.append(run.mintca("ca", "rotate", listener="mtls"))


def acme_eab_create(run: Run) -> None:
    created = json.loads(
        run.mintca("acme", "eab", "create", "--name", "*.internal", "--json", listener="mtls")
    )
    run.eab_keys.append(created["hmac_key"])


def hold(run: Run) -> None:
    run.outputs.append(
        run.mintca("cert", "revoke", run.serial, "--reason", "certificateHold", listener="mtls")
    )


def unhold(run: Run) -> None:
    run.outputs.append(run.mintca("cert", "unhold", run.serial, listener="mtls"))


def revoke(run: Run) -> None:
    run.outputs.append(
        run.mintca("cert", "revoke", run.serial, "--reason", "keyCompromise", listener="mtls")
    )


def crl_fetch(run: Run) -> None:
    with run.live.admin_client() as admin:
        ca_id = next(c["ca_id"] for c in admin.get("/admin/cas").json() if c["active"])
    out = str(run.workdir / "crl.der")
    run.outputs.append(run.mintca("crl", "fetch", ca_id, "--out", out, listener="public"))


def ocsp_both_ways(run: Run) -> None:
    out = run.workdir / "svc"
    certificate = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    issuer, root = x509.load_pem_x509_certificates((out / "chain.pem").read_bytes())
    with httpx.Client(base_url=run.live.public_url, timeout=30) as client:
        for leaf, signer in ((certificate, issuer), (issuer, root)):
            der = (
                ocsp.OCSPRequestBuilder()
                .add_certificate(leaf, signer, hashes.SHA1())  # OCSP CertIDs use SHA-1 (RFC 5019)
                .build()
                .public_bytes(serialization.Encoding.DER)
            )
            posted = client.post(
                "/ocsp", content=der, headers={"Content-Type": "application/ocsp-request"}
            )
            fetched = client.get("/ocsp/" + base64.b64encode(der).decode())
            for response in (posted, fetched):
                assert response.status_code == 200, response.text
                assert ocsp.load_der_ocsp_response(response.content).response_status.name == (
                    "SUCCESSFUL"
                )


def audit(run: Run) -> None:
    run.outputs.append(run.mintca("audit", "list", listener="mtls"))
    run.outputs.append(run.mintca("audit", "verify", listener="mtls"))


def kek_rotate(run: Run) -> None:
    run.outputs.append(run.mintca("kek", "rotate"))
    run.read_kek()


def failures(run: Run) -> None:
    """Errors are logged too: a bad token and a bad request must not bring secrets along."""
    with httpx.Client(base_url=run.live.public_url, timeout=30) as client:
        bad = client.post(
            "/v1/certificates",
            content=b"-----BEGIN CERTIFICATE REQUEST-----\nxx\n",
            headers={
                # Unknown, so 401 in every worker (a worker may still hold the spent token's
                # grant in its cache, where a bad CSR would be the 400 that answers first).
                "Authorization": f"Bearer mintca_{'0' * 43}",
                "Content-Type": "application/pkcs10",
            },
        )
    assert bad.status_code == 401, bad.text


STEPS: list[tuple[str, Callable[[Run], None]]] = [
    ("token create", token_create),
    ("enroll", enroll),
    ("renew", renew),
    ("hold", hold),
    ("unhold", unhold),
    ("revoke", revoke),
    ("crl fetch", crl_fetch),
    ("ocsp", ocsp_both_ways),
    ("ca rotate", ca_rotate),
    ("acme eab create", acme_eab_create),
    ("audit", audit),
    ("kek rotate", kek_rotate),
    ("ocsp after the rotation", ocsp_both_ways),
    ("failures", failures),
]


def private_keys(run: Run) -> dict[str, PrivateKey]:
    """Every private key of the run: files in the data dir and the enrollment's output, CA
    and responder keys unwrapped from the database."""
    keys: dict[str, PrivateKey] = {}
    for path in (
        run.settings.data_dir / "server-key.pem",
        run.settings.data_dir / "admin-key.pem",
        run.workdir / "svc" / "key.pem",
        run.workdir / "svc-renewed" / "key.pem",
    ):
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        assert isinstance(loaded, PrivateKey)
        keys[path.name] = loaded
    db = Database(run.settings.effective_database_url, pool_size=1)
    try:
        with db.read() as session:
            wrapped = [(c.id, c.key_wrapped) for c in session.scalars(select(CARecord))]
            wrapped += [
                (f"ocsp:{r.serial}", r.key_wrapped)
                for r in session.scalars(select(ResponderRecord))
            ]
    finally:
        db.dispose()
    for label, blob in wrapped:
        keys[label] = unwrap_private_key(blob, kek=run.keks, label=label)
    assert sum(1 for label in keys if label.startswith("ocsp:")) == 2, keys.keys()
    return keys


def secrets_of_the_run(run: Run) -> dict[str, str]:
    """What must never appear in a log line, by a name that says what it is."""
    found: dict[str, str] = {}
    for n, token in enumerate(run.tokens):
        found[f"token {n}"] = token.removeprefix("mintca_")
    for n, eab_key in enumerate(run.eab_keys):
        found[f"EAB HMAC key {n}"] = eab_key
    for n, kek in enumerate(run.keks):
        found[f"KEK {n} (base64)"] = base64.b64encode(kek).decode()
        found[f"KEK {n} (hex)"] = kek.hex()
    for label, key in private_keys(run).items():
        for form_name, form in (
            ("PKCS8", serialization.PrivateFormat.PKCS8),
            ("traditional", serialization.PrivateFormat.TraditionalOpenSSL),
        ):
            try:
                der = key.private_bytes(
                    serialization.Encoding.DER, form, serialization.NoEncryption()
                )
            except ValueError:
                continue  # Ed25519 has no traditional form
            encoded = base64.b64encode(der).decode()
            found[f"{label} {form_name} DER (base64)"] = encoded
            found[f"{label} {form_name} DER (hex)"] = der.hex()
            # A PEM body line is 64 characters of that base64: any one of them is a leak.
            for i in range(0, len(encoded) - 63, 64):
                found[f"{label} {form_name} PEM line {i // 64}"] = encoded[i : i + 64]
    return found


@pytest.fixture
def run(settings: Settings, tmp_path: Path) -> Run:
    """An empty data dir and database; the KEK is the file `init` makes."""
    file_settings = settings.model_copy(update={"kek": None})
    workdir = tmp_path / "work"
    workdir.mkdir()
    return Run(file_settings, workdir)


def test_no_secret_in_any_log_line_of_a_full_run(run: Run, tmp_path: Path) -> None:
    init(run)
    process, run.server = start_server(
        run.settings,
        tmp_path / "serve.log",
        workers=2,
        extra_env={"MINTCA_LOG_LEVEL": "debug", "MINTCA_LOG_FORMAT": "json"},
    )
    try:
        for _name, step in STEPS:
            step(run)
    finally:
        stop_server(process)
    log = run.live.log()

    lines = log.splitlines()
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON log line: {line[:300]}")
    assert all({"at", "level", "logger", "message", "process"} <= set(e) for e in entries)
    loggers = {e["logger"] for e in entries}
    assert {"uvicorn.access", "uvicorn.error"} <= loggers, loggers
    assert "DEBUG" in {e["level"] for e in entries}, "the run logged at DEBUG level"
    access = [e for e in entries if e["logger"] == "uvicorn.access"]
    assert {"client", "method", "path", "status"} <= set(access[0]), access[0]
    started = {e["process"] for e in entries if e["message"].startswith("Started server process")}
    assert len(started) == 2, "both workers log, in JSON"
    secrets = secrets_of_the_run(run)
    everything = {"server log": log, **{f"CLI output {n}": o for n, o in enumerate(run.outputs)}}
    leaks = [
        f"{what} in {where}"
        for where, text in everything.items()
        for what, secret in secrets.items()
        if secret in text
    ]
    assert leaks == [], leaks
    assert len(secrets) > 50, "the check looked for every key in every form"
    print(f"log lines checked: {len(lines)}; secrets looked for: {len(secrets)}")
