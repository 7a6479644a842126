"""pkilint's RFC 5280 certificate linter finds nothing, not even a warning, in what MintCA
issues: root, issuing CA, OCSP responder, the admin certificate and leaves of every profile,
except its false positive on SPIFFE URIs (see _SPIFFE_FINDING).

(The mtls server certificate that `init` makes for `localhost` is left out: pkilint wants two
labels in a dNSName, while RFC 1034's preferred name syntax allows one, and SPEC asks for
`localhost` by default.)"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from app.clock import FixedClock
from app.config import Settings
from app.services.container import Services
from app.services.setup import InitOptions, initialise
from tests.helpers import make_csr

LINTER = Path(sys.executable).with_name("lint_pkix_cert")


# pkilint checks URIs with `validators.url`, which knows only ftp, git, http(s), rtsp, sftp,
# ssh and telnet, so every SPIFFE ID is "invalid URI syntax" to it. RFC 5280 §4.2.1.6 allows
# any URI scheme; MintCA's caller URIs are checked against the SPIFFE ID grammar instead, and
# that one pkilint finding is set aside for them alone.
_SPIFFE_FINDING = re.compile(
    r"GeneralNameUriSyntaxValidator @ [\w.]+\n\s+pkix\.invalid_uri_syntax \(ERROR\): "
    r'Invalid URI syntax: "(spiffe://[^"]*)"\n?'
)
_SPIFFE_ID = re.compile(r"spiffe://[a-z0-9._-]+(/(?!\.\.?(/|$))[A-Za-z0-9._-]+)+")


def lint(certificate: x509.Certificate, path: Path) -> str:
    path.write_bytes(certificate.public_bytes(Encoding.PEM))
    done = subprocess.run(
        [str(LINTER), "lint", "-s", "WARNING", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    findings = (done.stdout + done.stderr).strip()
    for uri in _SPIFFE_FINDING.findall(findings):
        assert _SPIFFE_ID.fullmatch(uri), f"not a SPIFFE ID: {uri!r}"
    return _SPIFFE_FINDING.sub("", findings).strip()


def enrolled(
    services: Services, profile: str, name: str, *, cn_only: bool = False
) -> x509.Certificate:
    token = services.tokens.create(
        actor="test",
        profiles=[profile],
        names=[name],
        ttl=timedelta(hours=1),
        max_uses=1,
        max_validity_days=None,
    )
    key, csr = make_csr(name)
    if cn_only:  # the caller's URI SAN is derived from the CN (README: client certificates)
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(csr.subject)
            .sign(key, hashes.SHA256())
        )
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
    "which",
    [
        "root",
        "issuing",
        "responder",
        "admin",
        "server",
        "client",
        "peer",
        "client cn only",
        "auditor cn only",
    ],
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
        "client cn only": lambda: enrolled(services, "client", "worker-1", cn_only=True),
        "auditor cn only": lambda: enrolled(services, "auditor", "alice", cn_only=True),
    }
    findings = lint(certificates[which](), tmp_path / f"{which}.pem")
    assert findings == "", findings
