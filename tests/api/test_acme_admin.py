"""`POST /admin/acme/eab`: an admin makes an EAB credential, shown once, audited."""

from __future__ import annotations

from typing import Any

from app.services.container import Services


def test_admin_makes_an_eab_credential(admin_client: Any, services: Services) -> None:
    response = admin_client.post("/admin/acme/eab", json={"names": ["*.internal"]})
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["kid"].startswith("eab_")
    assert "=" not in created["hmac_key"], created  # unpadded: lego refuses padding
    assert len(created["hmac_key"]) == 43, created  # 256 bits
    refused = admin_client.post(
        "/admin/acme/eab", json={"names": ["*.internal"], "profile": "admin"}
    )
    assert refused.status_code == 400, refused.text
    audited = next(e for e in services.audit.newest(limit=5) if e.action == "acme.eab.create")
    assert audited.target == created["kid"]
    assert created["hmac_key"] not in str(audited.details)
