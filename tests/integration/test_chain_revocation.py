"""Revocation checking of the whole chain: the issuing CA points at its root's CRL and OCSP."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.integration.live import LiveServer

pytestmark = pytest.mark.integration


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)


def test_crl_check_all_and_root_ocsp_accept_the_chain(
    live_server: LiveServer, tmp_path: Path
) -> None:
    with live_server.admin_client() as admin:
        listed = admin.get("/admin/cas").json()
    root_id = next(ca["ca_id"] for ca in listed if ca["kind"] == "root")
    with live_server.public_client() as public:
        issuing = x509.load_pem_x509_certificates(public.get("/ca/chain.pem").content)[0]
        crls_pem = "".join(public.get(f"/crl/{ca['ca_id']}.pem").text for ca in listed)
    issuing_pem = tmp_path / "issuing.pem"
    issuing_pem.write_bytes(issuing.public_bytes(Encoding.PEM))

    # The issuing CA certificate names its root's CRL and OCSP responder.
    points = issuing.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert [p.full_name[0].value for p in points] == [f"http://testserver/crl/{root_id}.crl"]
    aia = issuing.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert {d.access_location.value for d in aia} == {
        "http://testserver/ocsp",
        f"http://testserver/ca/{root_id}.crt",
    }

    # openssl verify -crl_check_all: the admin leaf against the root's and the issuer's CRL.
    crls = tmp_path / "crls.pem"
    crls.write_text(crls_pem)
    leaf = x509.load_pem_x509_certificates((live_server.data_dir / "admin.pem").read_bytes())[0]
    leaf_pem = tmp_path / "admin-leaf.pem"
    leaf_pem.write_bytes(leaf.public_bytes(Encoding.PEM))
    verify = run(
        "openssl", "verify", "-crl_check_all", "-CAfile", str(live_server.root_pem),
        "-untrusted", str(issuing_pem), "-CRLfile", str(crls), str(leaf_pem),
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert ": OK" in verify.stdout, verify.stdout + verify.stderr

    # The root's OCSP answer for the issuing CA (which lives in the CA table, not certificates).
    answer = run(
        "openssl", "ocsp", "-issuer", str(live_server.root_pem), "-cert", str(issuing_pem),
        "-url", f"{live_server.public_url}/ocsp", "-CAfile", str(live_server.root_pem),
    )  # fmt: skip
    assert "Response verify OK" in answer.stderr + answer.stdout, answer.stdout + answer.stderr
    assert "issuing.pem: good" in answer.stdout, answer.stdout + answer.stderr
