"""`mintca init`: the files SPEC names, the CA hierarchy it creates, the key and name options,
and idempotence (a second run changes no file and no row, and says so)."""

from __future__ import annotations

import ipaddress
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.pool import NullPool
from typer.testing import CliRunner

from app.cli.main import app

pytestmark = pytest.mark.db

ROOT = Path(__file__).resolve().parents[2]
PRIVATE = 0o600


@pytest.fixture
def cli_env(database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """The environment of a `mintca` run: this test's fresh database, nothing else of the
    developer's MINTCA_* variables, and a working directory without a `.env`."""
    for name in list(os.environ):
        if name.startswith("MINTCA_"):
            monkeypatch.delenv(name)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    return {"MINTCA_DATABASE_URL": database_url}


def mintca(env: dict[str, str], *args: str) -> Any:
    result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def init(env: dict[str, str], data_dir: Path, *options: str) -> Any:
    return mintca(env, "init", "--data-dir", str(data_dir), *options)


def pems(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def basic_constraints(certificate: x509.Certificate) -> x509.BasicConstraints:
    return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value


def key_matches(key_path: Path, certificate: x509.Certificate) -> bool:
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    return key.public_key() == certificate.public_key()


def check_data_dir(data_dir: Path) -> dict[str, x509.Certificate]:
    """Everything SPEC says about the files of an initialised data dir."""
    (root,) = pems(data_dir / "root.pem")
    issuing, chain_root = pems(data_dir / "ca-chain.pem")
    server, server_issuer = pems(data_dir / "server.pem")
    admin, admin_issuer = pems(data_dir / "admin.pem")

    assert chain_root == root, "ca-chain.pem: issuing CA, then root"
    assert server_issuer == issuing, "server.pem: leaf, then issuing CA"
    assert admin_issuer == issuing, "admin.pem: leaf, then issuing CA"
    root.verify_directly_issued_by(root)
    issuing.verify_directly_issued_by(root)
    server.verify_directly_issued_by(issuing)
    admin.verify_directly_issued_by(issuing)

    assert basic_constraints(root).ca
    assert basic_constraints(issuing).ca
    assert basic_constraints(issuing).path_length == 0, "the issuing CA has pathLen 0"
    assert issuing.not_valid_after_utc <= root.not_valid_after_utc, "never outlives its root"
    for leaf in (server, admin):
        assert not basic_constraints(leaf).ca
        assert leaf.not_valid_after_utc <= issuing.not_valid_after_utc
    server_eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    admin_eku = admin.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in server_eku
    assert list(admin_eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]

    for name in ("server-key.pem", "admin-key.pem"):
        assert mode(data_dir / name) == PRIVATE, f"{name}: {oct(mode(data_dir / name))}"
    assert key_matches(data_dir / "server-key.pem", server)
    assert key_matches(data_dir / "admin-key.pem", admin)
    for name in ("root.pem", "ca-chain.pem", "server.pem", "admin.pem"):
        assert not mode(data_dir / name) & 0o022, f"{name} is writable by others"
    return {"root": root, "issuing": issuing, "server": server, "admin": admin}


def san(certificate: x509.Certificate) -> x509.SubjectAlternativeName:
    return certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def test_init_as_a_process_writes_the_spec_files(cli_env: dict[str, str], data_dir: Path) -> None:
    """`python -m app.cli init` with no MINTCA_KEK: the KEK goes to `<data dir>/kek`, 0600."""
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "init", "--data-dir", str(data_dir)],
        env={**os.environ, **cli_env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Initialised" in result.stdout, result.stdout
    certificates = check_data_dir(data_dir)
    assert mode(data_dir / "kek") == PRIVATE, oct(mode(data_dir / "kek"))
    root, issuing = certificates["root"], certificates["issuing"]
    assert isinstance(root.public_key(), ec.EllipticCurvePublicKey)
    assert root.public_key().curve.name == "secp384r1", "root: EC P-384 by default"
    assert isinstance(issuing.public_key(), ec.EllipticCurvePublicKey)
    assert issuing.public_key().curve.name == "secp256r1", "issuing: EC P-256 by default"
    names = san(certificates["server"])
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]


def test_init_with_kek_in_the_environment_writes_no_kek_file(
    cli_env: dict[str, str], data_dir: Path, kek: str
) -> None:
    init({**cli_env, "MINTCA_KEK": kek}, data_dir)

    check_data_dir(data_dir)
    assert not (data_dir / "kek").exists()


@pytest.mark.parametrize(
    ("root_key", "issuing_key", "root_type", "issuing_type"),
    [
        pytest.param(
            "rsa-2048", "ed25519", rsa.RSAPublicKey, ed25519.Ed25519PublicKey, id="rsa root"
        ),
        pytest.param(
            "ed25519", "rsa-2048", ed25519.Ed25519PublicKey, rsa.RSAPublicKey, id="ed25519 root"
        ),
        pytest.param(
            "ec-p256", "ec-p384", ec.EllipticCurvePublicKey, ec.EllipticCurvePublicKey, id="ec"
        ),
    ],
)
def test_key_options(
    root_key: str,
    issuing_key: str,
    root_type: type,
    issuing_type: type,
    cli_env: dict[str, str],
    data_dir: Path,
) -> None:
    init(cli_env, data_dir, "--root-key", root_key, "--issuing-key", issuing_key)

    certificates = check_data_dir(data_dir)
    assert isinstance(certificates["root"].public_key(), root_type)
    assert isinstance(certificates["issuing"].public_key(), issuing_type)
    if root_key.startswith("rsa"):
        assert certificates["root"].public_key().key_size == 2048  # type: ignore[union-attr]


def test_unknown_key_type_is_refused_before_anything_is_written(
    cli_env: dict[str, str], data_dir: Path
) -> None:
    result = CliRunner().invoke(
        app, ["init", "--data-dir", str(data_dir), "--root-key", "rsa-1024"], env=cli_env
    )

    assert result.exit_code != 0
    assert "rsa-1024" in result.output or "choose one of" in result.output, result.output
    assert not data_dir.exists()


def test_server_names(cli_env: dict[str, str], data_dir: Path) -> None:
    init(
        cli_env,
        data_dir,
        "--server-name",
        "mtls.example.internal",
        "--server-name",
        "10.1.2.3",
        "--server-name",
        "::1",
        "--name",
        "Acme",
        "--admin-name",
        "ops-admin",
    )

    certificates = check_data_dir(data_dir)
    names = san(certificates["server"])
    assert names.get_values_for_type(x509.DNSName) == ["mtls.example.internal"]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.1.2.3"),
        ipaddress.ip_address("::1"),
    ]
    assert "Acme" in certificates["root"].subject.rfc4514_string()
    assert certificates["admin"].subject.rfc4514_string() == "CN=ops-admin"


# --- Idempotence ----------------------------------------------------------------------------------


def snapshot_files(data_dir: Path) -> dict[str, tuple[int, bytes, int]]:
    return {
        str(path.relative_to(data_dir)): (path.stat().st_mtime_ns, path.read_bytes(), mode(path))
        for path in sorted(data_dir.rglob("*"))
        if path.is_file()
    }


def snapshot_rows(database_url: str) -> dict[str, int]:
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            tables = inspect(connection).get_table_names()
            return {
                t: int(connection.execute(text(f'SELECT count(*) FROM "{t}"')).scalar_one())
                for t in tables
            }
    finally:
        engine.dispose()


@pytest.fixture
def initialised_by_cli(cli_env: dict[str, str], data_dir: Path) -> dict[str, str]:
    init(cli_env, data_dir)
    return cli_env


@pytest.mark.parametrize(
    "options",
    [
        pytest.param((), id="same options"),
        pytest.param(
            ("--root-key", "rsa-2048", "--server-name", "other.internal", "--admin-name", "x"),
            id="other options",
        ),
    ],
)
def test_second_init_changes_nothing(
    options: tuple[str, ...],
    initialised_by_cli: dict[str, str],
    data_dir: Path,
    database_url: str,
) -> None:
    files = snapshot_files(data_dir)
    rows = snapshot_rows(database_url)
    assert {"root.pem", "ca-chain.pem", "server.pem", "server-key.pem", "admin.pem"} <= set(files)
    assert rows["cas"] == 2, rows
    assert rows["certificates"] == 2, rows

    result = init(initialised_by_cli, data_dir, *options)

    assert "Already initialised" in result.stdout, result.stdout
    assert "nothing changed" in result.stdout, result.stdout
    assert "wrote" not in result.stdout, result.stdout
    assert snapshot_files(data_dir) == files, "a second init touched files"
    assert snapshot_rows(database_url) == rows, "a second init changed rows"
