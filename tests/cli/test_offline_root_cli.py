"""The offline root from the command line: `mintca init --offline-root` writes the root key to
a 0600 file; `mintca ca rotate --root-key FILE` and `mintca ca root-crl --root-key FILE` run
locally against the database with the KEK; a rotation over HTTP is refused (409, exit 1)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from app.config import Settings
from tests.conftest import make_settings
from tests.helpers import make_csr
from tests.integration.live import LiveServer, start_server, stop_server

pytestmark = pytest.mark.db

TIMEOUT = 60


@pytest.fixture
def env(database_url: str, kek: str, tmp_path: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("MINTCA_")},
        "MINTCA_DATABASE_URL": database_url,
        "MINTCA_KEK": kek,
        "MINTCA_DATA_DIR": str(tmp_path / "data"),
    }


def mintca(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        cwd=Path(env["MINTCA_DATA_DIR"]).parent,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def active_issuer(database_url: str) -> str:
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return str(
                connection.execute(
                    text("SELECT id FROM cas WHERE kind = 'issuing' AND active = :yes"),
                    {"yes": True},
                ).scalar_one()
            )
    finally:
        engine.dispose()


@pytest.fixture
def offline_dir(env: dict[str, str]) -> Path:
    result = mintca(env, "init", "--offline-root")
    assert result.returncode == 0, result.stderr
    data_dir = Path(env["MINTCA_DATA_DIR"])
    assert f"root key:   {data_dir / 'root-key.pem'}: move it offline now" in result.stdout
    return data_dir


def test_init_writes_a_private_root_key(offline_dir: Path) -> None:
    key_path = offline_dir / "root-key.pem"

    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in key_path.read_bytes()


def test_rotate_and_root_crl_with_the_root_key(
    env: dict[str, str], offline_dir: Path, database_url: str
) -> None:
    key = str(offline_dir / "root-key.pem")

    rotated = mintca(env, "ca", "rotate", "--root-key", key, "--key-type", "ec-p384")
    signed = mintca(env, "ca", "root-crl", "--root-key", key)

    assert rotated.returncode == 0, rotated.stderr
    match = re.search(r"^rotated: issuing CA ([0-9a-f]{40}) is now active$", rotated.stdout, re.M)
    assert match, rotated.stdout
    assert active_issuer(database_url) == match[1]
    assert signed.returncode == 0, signed.stderr
    # init signed CRL 1, the rotation 2, root-crl 3: one sequence for the root.
    assert re.match(r"signed CRL 3 of root CA [0-9a-f]{40}, next update ", signed.stdout), (
        signed.stdout
    )


@pytest.mark.parametrize(
    ("key_file", "message"),
    [
        pytest.param("admin-key.pem", "not the root CA's key", id="another key"),
        pytest.param("root.pem", "not an unencrypted PEM private key", id="not a key"),
    ],
)
def test_rotate_with_a_wrong_key_file_fails_and_changes_nothing(
    env: dict[str, str], offline_dir: Path, database_url: str, key_file: str, message: str
) -> None:
    before = active_issuer(database_url)

    result = mintca(env, "ca", "rotate", "--root-key", str(offline_dir / key_file))

    assert result.returncode == 1, result.stdout
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert active_issuer(database_url) == before


@pytest.fixture
def offline_server(
    offline_dir: Path, database_url: str, kek: str, tmp_path: Path
) -> Iterator[LiveServer]:
    settings: Settings = make_settings(data_dir=offline_dir, database_url=database_url, kek=kek)
    process, server = start_server(settings, tmp_path / "serve.log")
    try:
        yield server
    finally:
        stop_server(process)


@pytest.mark.slow
def test_rotate_over_http_is_refused_for_an_offline_root(
    env: dict[str, str], offline_server: LiveServer, database_url: str
) -> None:
    before = active_issuer(database_url)

    result = mintca(env, "ca", "rotate", "--url", offline_server.mtls_url)

    assert result.returncode == 1, result.stdout
    assert "HTTP 409" in result.stderr, result.stderr
    assert "--root-key" in result.stderr, result.stderr
    assert active_issuer(database_url) == before
    with offline_server.public_client() as public:
        chain = x509.load_pem_x509_certificates(public.get("/ca/chain.pem").content)
    assert chain[0].subject.rfc4514_string().startswith("CN=MintCA Issuing CA 1,"), chain
    assert "Traceback" not in offline_server.log(), offline_server.log()


@pytest.mark.slow
def test_a_local_rotation_reaches_the_running_server_and_verifies_with_the_root_crl(
    env: dict[str, str], offline_server: LiveServer, offline_dir: Path, tmp_path: Path
) -> None:
    rotated = mintca(env, "ca", "rotate", "--root-key", str(offline_dir / "root-key.pem"))
    assert rotated.returncode == 0, rotated.stderr

    with offline_server.public_client() as public:
        chain = x509.load_pem_x509_certificates(public.get("/ca/chain.pem").content)
    assert chain[0].subject.rfc4514_string().startswith("CN=MintCA Issuing CA 2,"), chain
    name = "svc.offline.internal"
    with offline_server.admin_client() as admin:
        token = admin.post("/admin/tokens", json={"names": [name], "profile": "server"})
    assert token.status_code == 201, token.text
    _key, csr = make_csr(name)
    with offline_server.public_client() as public:
        enrolled = public.post(
            "/v1/certificates",
            json={"csr": csr.public_bytes(Encoding.PEM).decode()},
            headers={"Authorization": f"Bearer {token.json()['token']}"},
        )
        crls = [public.get(f"/crl/{ca}.pem").content for ca in ca_ids(chain)]
    assert enrolled.status_code == 201, enrolled.text
    leaf = tmp_path / "leaf.pem"
    leaf.write_text(enrolled.json()["certificate"])
    (tmp_path / "issuing.pem").write_bytes(chain[0].public_bytes(Encoding.PEM))
    (tmp_path / "crls.pem").write_bytes(b"".join(crls))

    verified = subprocess.run(
        [
            *("openssl", "verify", "-crl_check_all", "-CAfile", str(offline_server.root_pem)),
            *("-untrusted", str(tmp_path / "issuing.pem"), "-CRLfile", str(tmp_path / "crls.pem")),
            str(leaf),
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.strip().endswith(": OK"), verified.stdout


def ca_ids(chain: list[x509.Certificate]) -> list[str]:
    return [
        c.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()
        for c in chain
    ]
