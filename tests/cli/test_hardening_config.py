"""Configuration that cannot work is refused at start with one clear line and exit code 2
(issue 12, items 2 and 10): CA names that make a derived CN exceed 64 characters, and
durations out of their bounds. A CA with a long name made before the check still answers
OCSP, because the responder's CN is cut to fit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from app.ca.bootstrap import MAX_CA_NAME_CHARS, check_ca_name, responder_common_name
from app.clock import FixedClock
from app.config import MAX_OCSP_VALIDITY, Settings
from app.errors import ConfigurationError
from app.services import setup
from app.services.container import Services
from app.services.responders import RENEW_BEFORE
from app.services.setup import InitOptions, initialise
from tests.helpers import enroll_via_services

pytestmark = pytest.mark.db


def run_mintca(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MINTCA_")}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def check_refused(result: subprocess.CompletedProcess[str], *words: str) -> None:
    output = f"stdout={result.stdout!r} stderr={result.stderr!r}"
    assert result.returncode == 2, output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"one clear line, not a traceback: {output}"
    for word in words:
        assert word in lines[0], output


@pytest.mark.parametrize(
    ("name", "words"),
    [
        pytest.param("N" * 37, ["37 characters", f"at most {MAX_CA_NAME_CHARS}"], id="37 chars"),
        pytest.param("N" * 51, ["51 characters"], id="51 chars"),
        pytest.param("Acme\nCorp", ["printable"], id="newline"),
    ],
)
def test_init_refuses_a_ca_name_whose_cns_do_not_fit(
    name: str, words: list[str], database_url: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    result = run_mintca(
        {"MINTCA_DATABASE_URL": database_url},
        tmp_path,
        "init",
        "--data-dir",
        str(data_dir),
        "--name",
        name,
    )
    check_refused(result, *words)
    assert not data_dir.exists() or not any(data_dir.iterdir()), "init wrote files"


@pytest.mark.parametrize(
    ("variable", "value", "command"),
    [
        pytest.param("MINTCA_CRL_VALIDITY", "0", "init", id="crl validity 0 / init"),
        pytest.param("MINTCA_CRL_VALIDITY", "3000000d", "serve", id="crl validity 3000000d"),
        pytest.param("MINTCA_OCSP_VALIDITY", "3d", "serve", id="ocsp validity over 2d"),
        pytest.param("MINTCA_OCSP_VALIDITY", "99999999999999d", "init", id="ocsp overflow"),
        pytest.param("MINTCA_HEADER_TIMEOUT", "0s", "serve", id="header timeout 0"),
    ],
)
def test_out_of_bounds_durations_stop_the_cli(
    variable: str, value: str, command: str, database_url: str, tmp_path: Path
) -> None:
    env = {"MINTCA_DATABASE_URL": database_url, "MINTCA_DATA_DIR": str(tmp_path / "data")}
    result = run_mintca({**env, variable: value}, tmp_path, command)
    check_refused(result, variable)
    assert not (tmp_path / "data").exists(), "the command started before refusing"


def _settings(**values: str) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value", "accepted"),
    [
        pytest.param("crl_validity", "0", False, id="crl/0"),
        pytest.param("crl_validity", "299s", False, id="crl/below 5m"),
        pytest.param("crl_validity", "5m", True, id="crl/5m"),
        pytest.param("crl_validity", "30d", True, id="crl/30d"),
        pytest.param("crl_validity", "2592001", False, id="crl/30d + 1s"),
        pytest.param("crl_validity", "3000000d", False, id="crl/3000000d"),
        pytest.param("ocsp_validity", "59s", False, id="ocsp/below 1m"),
        pytest.param("ocsp_validity", "1m", True, id="ocsp/1m"),
        pytest.param("ocsp_validity", "2d", True, id="ocsp/2d"),
        pytest.param("ocsp_validity", "49h", False, id="ocsp/over 2d"),
        pytest.param("header_timeout", "1s", True, id="header/1s"),
        pytest.param("header_timeout", "301s", False, id="header/over 5m"),
        pytest.param("ocsp_validity", "999999999999d", False, id="overflow"),
    ],
)
def test_duration_bounds(field: str, value: str, accepted: bool) -> None:
    if accepted:
        _settings(**{field: value})
    else:
        with pytest.raises(ValidationError, match=r"must be between|too long"):
            _settings(**{field: value})


def test_ocsp_validity_never_outlives_the_responder() -> None:
    # An answer signed just before the responder is replaced must expire before it does.
    assert MAX_OCSP_VALIDITY <= RENEW_BEFORE


@pytest.mark.parametrize("letter", ["N", "é", "名"])
@pytest.mark.parametrize("length", [1, 36, 37, 51, 64])
def test_responder_common_name_always_fits(length: int, letter: str) -> None:
    ca_cn = (letter * length + " Issuing CA 1")[:64]
    cn = responder_common_name(ca_cn)
    assert len(cn.encode()) <= 64, cn
    assert cn.endswith(" OCSP Responder")


def test_a_ca_name_is_measured_in_utf8_bytes() -> None:
    check_ca_name("é" * 16)  # 32 bytes
    with pytest.raises(ConfigurationError, match="has 34 characters"):
        check_ca_name("é" * 17)


def test_long_named_ca_from_before_the_check_still_answers_ocsp(
    settings: Settings, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 45-character name: on main every OCSP answer of its CA was internalError."""
    monkeypatch.setattr(setup, "check_ca_name", lambda _name: None)  # as an old init made it
    initialise(settings, InitOptions(name="L" * 45), clock)
    services = Services(settings, clock=clock)
    try:
        issued = enroll_via_services(services)
        request = (
            ocsp.OCSPRequestBuilder()
            .add_certificate(issued.certificate, issued.chain[0], hashes.SHA1())
            .build()
            .public_bytes(Encoding.DER)
        )
        response = ocsp.load_der_ocsp_response(services.ocsp.respond(request).der)
        assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
        assert response.certificate_status == ocsp.OCSPCertStatus.GOOD
        (responder,) = response.certificates
        cn = responder.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert len(str(cn)) <= 64, cn
        assert str(cn).startswith("L" * 45), cn
    finally:
        services.close()
