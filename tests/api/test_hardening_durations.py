"""Durations in requests have bounds, and every value outside them is a 400 problem that
changes nothing (issue 12, item 10): `validity_days` of an enrollment, `ttl_seconds` and
`max_validity_days` of a token."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers import csr_pem

pytestmark = pytest.mark.db

THIRTY_DAYS = 30 * 86400


@pytest.mark.parametrize(
    ("field", "value", "status"),
    [
        pytest.param("ttl_seconds", 0, 400, id="ttl/0"),
        pytest.param("ttl_seconds", -1, 400, id="ttl/negative"),
        pytest.param("ttl_seconds", 1, 201, id="ttl/1 s"),
        pytest.param("ttl_seconds", THIRTY_DAYS, 201, id="ttl/30 days"),
        pytest.param("ttl_seconds", THIRTY_DAYS + 1, 400, id="ttl/30 days + 1 s"),
        pytest.param("ttl_seconds", 10**30, 400, id="ttl/huge"),
        pytest.param("max_validity_days", 0, 400, id="max validity/0"),
        pytest.param("max_validity_days", 1, 201, id="max validity/1"),
        pytest.param("max_validity_days", 397, 201, id="max validity/397"),
        pytest.param("max_validity_days", 398, 400, id="max validity/398"),
        pytest.param("max_validity_days", 3_000_000, 400, id="max validity/3000000"),
        pytest.param("max_validity_days", 10**30, 400, id="max validity/huge"),
        pytest.param("max_validity_days", 1.5, 400, id="max validity/fraction"),
    ],
)
def test_token_duration_bounds(
    field: str,
    value: Any,
    status: int,
    admin_client: TestClient,
    problem: Callable[..., dict[str, Any]],
) -> None:
    response = admin_client.post(
        "/admin/tokens", json={"names": ["*.zone"], "profile": "server", field: value}
    )
    if status == 201:
        assert response.status_code == 201, response.text
    else:
        problem(response, 400)


@pytest.mark.parametrize(
    ("validity_days", "status"),
    [
        pytest.param(0, 400, id="0"),
        pytest.param(-5, 400, id="negative"),
        pytest.param(1, 201, id="1"),
        pytest.param(397, 201, id="397, the profile's maximum"),
        pytest.param(398, 400, id="398"),
        pytest.param(3_000_000, 400, id="3000000"),
        pytest.param(10**30, 400, id="huge"),
        pytest.param("30d", 400, id="text"),
    ],
)
def test_enrollment_validity_bounds(
    validity_days: Any,
    status: int,
    public_client: TestClient,
    new_token: Callable[..., dict[str, Any]],
    problem: Callable[..., dict[str, Any]],
) -> None:
    token = new_token(["a.zone"], profile="server")
    response = public_client.post(
        "/v1/certificates",
        json={"csr": csr_pem("a.zone"), "validity_days": validity_days},
        headers={"Authorization": f"Bearer {token['token']}"},
    )
    if status == 201:
        assert response.status_code == 201, response.text
    else:
        problem(response, 400)
