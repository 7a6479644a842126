"""pkilint's RFC 5280 certificate linter finds nothing, not even a warning, in what MintCA
issues: root, issuing CA, OCSP responder, the admin certificate and leaves of every profile.

(The mtls server certificate that `init` makes for `localhost` is left out: pkilint wants two
labels in a dNSName, while RFC 1034's preferred name syntax allows one, and SPEC asks for
`localhost` by default.)"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from app.clock import FixedClock
from app.config import Settings
from app.services.container import Services
from app.services.setup import InitOptions, initialise
from tests.helpers import make_csr

LINTER = Path(sys.executable).with_name("lint_pkix_cert")


def lint(certificate: x509.Certificate, path: Path) -> tuple[int, str]:
    """pkilint's exit status (the number of findings at WARNING or above, 1 when it cannot
    load the certificate) and its output: both must say "nothing", since a linter that
    crashes or cannot parse the file may print nothing to stdout at all."""
    path.write_bytes(certificate.public_bytes(Encoding.PEM))
    done = subprocess.run(
        [str(LINTER), "lint", "-s", "WARNING", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, (done.stdout + done.stderr).strip()


def enrolled(services: Services, profile: str, name: str) -> x509.Certificate:
    token = services.tokens.create(
        actor="test",
        profiles=[profile],
        names=[name],
        ttl=timedelta(hours=1),
        max_uses=1,
        max_validity_days=None,
    )
    _key, csr = make_csr(name)
    issued = services.enrollment.enroll(token=token.token, csr_data=csr.public_bytes(Encoding.PEM))
    return issued.certificate


@pytest.fixture
def services(settings: Settings, clock: FixedClock) -> Iterator[Services]:
    """A CA initialised with a public URL of a real-looking host (the shared fixtures use
    `http://testserver`, which pkilint rightly calls a bad URI host)."""
    settings = settings.model_copy(update={"public_url": "http://ca.example.internal:8080"})
    initialise(settings, InitOptions(), clock)
    services = Services(settings, clock=clock)
    try:
        yield services
    finally:
        services.close()


@pytest.mark.parametrize(
    "which", ["root", "issuing", "responder", "admin", "server", "client", "peer"]
)
def test_pkilint_finds_nothing(services: Services, which: str, tmp_path: Path) -> None:
    issuing = services.keyring.active_issuer()
    certificates = {
        "root": lambda: services.keyring.root().certificate,
        "issuing": lambda: issuing.certificate,
        "responder": lambda: services.responders.current(issuing).certificate,
        "admin": lambda: x509.load_pem_x509_certificates(
            (services.settings.data_dir / "admin.pem").read_bytes()
        )[0],
        "server": lambda: enrolled(services, "server", "api.example.internal"),
        "client": lambda: enrolled(services, "client", "worker.example.internal"),
        "peer": lambda: enrolled(services, "peer", "mesh.example.internal"),
    }
    status, findings = lint(certificates[which](), tmp_path / f"{which}.pem")
    assert (status, findings) == (0, ""), f"exit status {status}: {findings}"
