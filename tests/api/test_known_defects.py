"""5xx answers that fuzzing found in other engineers' areas, reported to the lead and held
here as strict xfails: when a fix lands the test passes, strict xfail turns that into a
failure, and the xfail goes together with its entry in tests/integration/fuzzing.py
(`known_defect`), which keeps the fuzzers green meanwhile."""

from __future__ import annotations

import os

import pytest
from fastapi.testclient import TestClient

from tests.conftest import TEST_DATABASE_URL_ENV

pytestmark = pytest.mark.db

ON_POSTGRESQL = bool(os.environ.get(TEST_DATABASE_URL_ENV))


@pytest.mark.xfail(
    ON_POSTGRESQL,
    strict=True,
    reason="audit (audit-keys' GET /admin/audit work): before_id is bounded by 2**63-1 but "
    "audit_log.id is INTEGER, so PostgreSQL raises NumericValueOutOfRange, a 500",
)
@pytest.mark.parametrize("before_id", [2**31, 2**63 - 1])
def test_audit_before_id_beyond_32_bits_is_not_a_500(
    admin_client: TestClient, before_id: int
) -> None:
    answer = admin_client.get("/admin/audit", params={"before_id": before_id})

    assert answer.status_code in (200, 400), answer.text
