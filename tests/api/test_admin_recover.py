"""`mintca admin recover` (issue 12, item 11): when every admin key is lost, the CA host
issues a fresh admin bundle straight through the services layer (database and KEK, no API),
audited as `cli:admin-recover`; the new certificate is an admin on the mtls listener."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from app.cli.main import app
from app.config import Settings
from app.errors import ConfigurationError
from app.services.container import Services

pytestmark = pytest.mark.db


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        "MINTCA_DATA_DIR": str(settings.data_dir),
        "MINTCA_DATABASE_URL": settings.effective_database_url,
        "MINTCA_KEK": settings.kek or "",
        "MINTCA_PUBLIC_URL": settings.public_url,
        **extra,
    }


def test_recover_issues_an_audited_admin_bundle(
    initialised_settings: Settings,
    services: Services,
    mtls_client_for: Callable[[str], TestClient],
    tmp_path: Path,
) -> None:
    out = tmp_path / "breakglass"
    result = CliRunner().invoke(
        app,
        ["admin", "recover", "--name", "ops-breakglass", "--out", str(out)],
        env=_env(initialised_settings),
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output

    leaf, issuing = x509.load_pem_x509_certificates((out / "admin.pem").read_bytes())
    key = serialization.load_pem_private_key((out / "admin-key.pem").read_bytes(), None)
    assert key.public_key() == leaf.public_key()
    assert stat.S_IMODE((out / "admin-key.pem").stat().st_mode) == 0o600
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "ops-breakglass"
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    assert leaf.issuer == issuing.subject
    serial = format(leaf.serial_number, "x")
    assert serial in result.output

    entries = [e for e in services.audit.newest(limit=10) if e.target == serial]
    assert {(e.actor, e.action) for e in entries} == {
        ("cli:admin-recover", "certificate.issue"),
        ("cli:admin-recover", "admin.recover"),
    }, entries
    client = mtls_client_for(leaf.public_bytes(Encoding.PEM).decode())
    cas = client.get("/admin/cas")
    assert cas.status_code == 200, f"the recovered certificate is not an admin: {cas.text}"


def test_recover_without_the_kek_is_refused(initialised_settings: Settings, tmp_path: Path) -> None:
    env = _env(initialised_settings, MINTCA_KEK="", MINTCA_KEK_FILE=str(tmp_path / "no-kek"))
    result = CliRunner().invoke(app, ["admin", "recover", "--out", str(tmp_path / "o")], env=env)
    assert isinstance(result.exception, ConfigurationError), result.output
    assert "no KEK" in result.exception.detail
    assert not (tmp_path / "o").exists()
