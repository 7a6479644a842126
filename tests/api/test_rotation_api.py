"""`POST /admin/cas/rotate` in process: 201 with the new CA, which `/ca/chain.pem`, enrollment
and `GET /admin/cas` show at once; bad options are 400 and change nothing."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from cryptography import x509
from fastapi.testclient import TestClient

from app.services.container import Services
from app.services.setup import InitReport

pytestmark = pytest.mark.db


def cas(admin_client: TestClient) -> list[dict[str, Any]]:
    response = admin_client.get("/admin/cas")
    assert response.status_code == 200, response.text
    return list(response.json())


def test_rotate_answers_the_new_active_ca(
    admin_client: TestClient,
    public_client: TestClient,
    initialised_report: InitReport,
    new_token: Any,
    csrs: Any,
) -> None:
    response = admin_client.post("/admin/cas/rotate", json={})

    assert response.status_code == 201, response.text
    new = response.json()
    assert new["kind"] == "issuing", new
    assert new["active"] is True, new
    assert new["parent_id"] == initialised_report.root_ca_id, new
    assert new["crl_url"].endswith(f"/crl/{new['ca_id']}.crl"), new
    assert new["issuer_crl_url"].endswith(f"/crl/{initialised_report.root_ca_id}.crl"), new
    listed = {ca["ca_id"]: ca["active"] for ca in cas(admin_client)}
    assert listed == {
        initialised_report.root_ca_id: False,
        initialised_report.issuing_ca_id: False,
        new["ca_id"]: True,
    }
    chain = x509.load_pem_x509_certificates(public_client.get("/ca/chain.pem").content)
    assert chain[0].subject.rfc4514_string() == new["subject"]
    assert chain[-1].subject == chain[-1].issuer, "the chain ends at the root"
    token = new_token(["a.zone"], profile="server")["token"]
    enrolled = public_client.post(
        "/v1/certificates",
        json={"csr": csrs.pem_for("a.zone")},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert enrolled.status_code == 201, enrolled.text
    assert x509.load_pem_x509_certificate(enrolled.json()["chain"][0].encode()) == chain[0]


def test_rotate_takes_a_key_type_and_a_validity(admin_client: TestClient) -> None:
    response = admin_client.post(
        "/admin/cas/rotate", json={"key_type": "ec-p384", "validity_days": 90}
    )

    assert response.status_code == 201, response.text
    body = response.json()
    lifetime = datetime.fromisoformat(body["not_after"]) - datetime.fromisoformat(
        body["not_before"]
    )
    assert 90 <= lifetime.days <= 91, body  # notBefore is backdated a few minutes


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"key_type": "dsa-1024"}, id="unknown key type"),
        pytest.param({"validity_days": 0}, id="zero days"),
        pytest.param({"validity_days": "long"}, id="not a number"),
        pytest.param({"issuer": "me"}, id="unknown member"),
        pytest.param([], id="not an object"),
    ],
)
def test_bad_options_are_400_and_change_nothing(
    body: Any, admin_client: TestClient, services: Services, problem: Any
) -> None:
    before = cas(admin_client)

    problem(admin_client.post("/admin/cas/rotate", json=body), 400)

    assert cas(admin_client) == before
    assert [e.action for e in services.audit.newest(limit=5)].count("ca.rotate") == 0
