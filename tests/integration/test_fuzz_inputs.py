"""Hypothesis-driven hostile input over real sockets, where schemathesis' schema-shaped cases
do not reach: malformed CSRs (PEM and DER, JSON and raw PKCS#10), OCSP requests (DER by POST,
base64 by GET), JSON bodies, serials and query parameters.

Every answer is tallied; the result must be zero 5xx (and no OCSP internalError), then
`/health` within 50 ms of its idle latency.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from hypothesis import given
from hypothesis import strategies as st

from app.config import Settings
from tests.helpers import make_csr
from tests.integration.fuzzing import (
    HEALTH_MARGIN_SECONDS,
    REQUEST_TIMEOUT_SECONDS,
    Tally,
    bounded,
    health_latency,
    known_defect,
    latency_after,
    latency_line,
)
from tests.integration.hostile import (
    QUERY_PARAMETERS,
    QUERY_VALUES,
    REVOKE_BODIES,
    SERIALS,
    csr_bodies,
    enroll_bodies,
    ocsp_get_paths,
    ocsp_requests,
    raw_name_csrs,
    token_bodies,
)
from tests.integration.live import LiveServer, start_server, stop_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CASES = 120  # per kind of input
PKCS10 = "application/pkcs10"
OCSP_REQUEST = "application/ocsp-request"


@pytest.fixture
def fuzz_server(initialised_settings: Settings, tmp_path: Path) -> Iterator[LiveServer]:
    process, server = start_server(initialised_settings, tmp_path / "serve.log", workers=2)
    try:
        yield server
    finally:
        stop_server(process)


# --- Running -------------------------------------------------------------------------------------


class Runner:
    """Sends each generated case with `send` and tallies the answer."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.seed = random.SystemRandom().getrandbits(32)
        self.runs = 0

    def run(
        self,
        strategy: st.SearchStrategy[Any],
        send: Callable[[Any], httpx.Response],
        describe: Callable[[Any], str],
        known: Callable[[Any], str | None] = lambda _value: None,
    ) -> None:
        self.runs += 1

        @bounded(CASES)
        @hypothesis.seed(self.seed + self.runs)
        @given(value=strategy)
        def case(value: Any) -> None:
            request = describe(value)[:300]
            try:
                answer = self.tally.send(lambda: send(value), (httpx.TransportError,))
            except httpx.TransportError as exc:  # timeouts, resets: no answer at all
                self.tally.record_no_answer(request, exc)
                return
            content_type = answer.headers.get("content-type", "")
            self.tally.record(
                request, answer.status_code, content_type, answer.content, known=known(value)
            )

        case()


def valid_inputs(server: LiveServer, admin: httpx.Client, public: httpx.Client) -> dict[str, Any]:
    """A token of many uses, a valid CSR, an issued certificate and an OCSP request for it."""
    made = admin.post("/admin/tokens", json={"names": ["*.internal"], "max_uses": 5000})
    assert made.status_code == 201, made.text
    token = made.json()["token"]
    _key, csr = make_csr("valid.fuzz.internal")
    issued = public.post(
        "/v1/certificates",
        json={"csr": csr.public_bytes(Encoding.PEM).decode()},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert issued.status_code == 201, issued.text
    leaf = x509.load_pem_x509_certificate(issued.json()["certificate"].encode())
    issuer = x509.load_pem_x509_certificate(issued.json()["chain"][0].encode())
    request = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA1()).build()
    return {
        "token": token,
        "csr_der": csr.public_bytes(Encoding.DER),
        "csr_pem": csr.public_bytes(Encoding.PEM).decode(),
        "serial": issued.json()["serial"],
        "ocsp_der": request.public_bytes(Encoding.DER),
    }


def test_hypothesis_hostile_inputs(fuzz_server: LiveServer) -> None:
    idle = health_latency(fuzz_server.public_url)
    tally = Tally("hypothesis, hostile inputs")
    runner = Runner(tally)
    with (
        fuzz_server.admin_client() as admin,
        fuzz_server.public_client() as public,
    ):
        admin.timeout = public.timeout = httpx.Timeout(REQUEST_TIMEOUT_SECONDS)
        valid = valid_inputs(fuzz_server, admin, public)
        bearer = {"Authorization": f"Bearer {valid['token']}"}
        postgresql = fuzz_server.settings.effective_database_url.startswith("postgresql")

        # CSRs: raw PKCS#10 (PEM or DER) and inside JSON.
        runner.run(
            csr_bodies(valid["csr_der"]),
            lambda body: public.post(
                "/v1/certificates", content=body, headers={**bearer, "Content-Type": PKCS10}
            ),
            lambda body: f"POST /v1/certificates pkcs10 {body[:120]!r}",
        )
        runner.run(
            csr_bodies(valid["csr_der"]),
            lambda body: public.post(
                "/v1/certificates",
                json={"csr": body.decode("latin-1")},
                headers=bearer,
            ),
            lambda body: f"POST /v1/certificates json csr={body[:120]!r}",
        )
        runner.run(
            raw_name_csrs(),
            lambda der: public.post(
                "/v1/certificates", content=der, headers={**bearer, "Content-Type": PKCS10}
            ),
            lambda der: f"POST /v1/certificates pkcs10 (hand-encoded names) {der.hex()}",
        )
        # OCSP: DER by POST, base64 by GET.
        runner.run(
            ocsp_requests(valid["ocsp_der"]),
            lambda der: public.post("/ocsp", content=der, headers={"Content-Type": OCSP_REQUEST}),
            lambda der: f"POST /ocsp {der[:120].hex()}",
        )
        runner.run(
            ocsp_get_paths(valid["ocsp_der"]),
            lambda path: public.get(f"/ocsp/{path}"),
            lambda path: f"GET /ocsp/{path[:200]}",
        )
        # JSON bodies.
        runner.run(
            enroll_bodies(valid["csr_pem"]),
            lambda body: public.post(
                "/v1/certificates",
                content=json.dumps(body),
                headers={**bearer, "Content-Type": "application/json"},
            ),
            lambda body: f"POST /v1/certificates {json.dumps(body)[:200]}",
        )
        runner.run(
            token_bodies(),
            lambda body: admin.post("/admin/tokens", content=json.dumps(body),
                                    headers={"Content-Type": "application/json"}),
            lambda body: f"POST /admin/tokens {json.dumps(body)[:200]}",
        )  # fmt: skip
        # Serials in paths, and revocation bodies on serials that do not exist.
        runner.run(
            SERIALS,
            lambda serial: public.get(f"/v1/certificates/{serial}/status"),
            lambda serial: f"GET /v1/certificates/{serial}/status",
        )
        runner.run(
            SERIALS,
            lambda serial: admin.get(f"/admin/certificates/{serial}"),
            lambda serial: f"GET /admin/certificates/{serial}",
        )
        runner.run(
            st.tuples(SERIALS, REVOKE_BODIES),
            lambda pair: admin.post(
                f"/admin/certificates/{pair[0]}/revoke",
                content=json.dumps(pair[1]),
                headers={"Content-Type": "application/json"},
            ),
            lambda pair: f"POST /admin/certificates/{pair[0]}/revoke {json.dumps(pair[1])}",
        )
        # Query parameters.
        runner.run(
            QUERY_PARAMETERS,
            lambda params: admin.get("/admin/certificates", params=params),
            lambda params: f"GET /admin/certificates?{params}",
        )
        runner.run(
            st.dictionaries(st.sampled_from(["limit", "before_id"]), QUERY_VALUES),
            lambda params: admin.get("/admin/audit", params=params),
            lambda params: f"GET /admin/audit?{params}",
            lambda params: known_defect("/admin/audit", params, postgresql=postgresql),
        )
        # The one real certificate is still known and good: nothing above changed it.
        status = public.get(f"/v1/certificates/{valid['serial']}/status")
    after = latency_after(fuzz_server.public_url, idle)

    report = f"{tally.report()}\nseed {runner.seed}\n{latency_line(idle, after)}"
    print(f"\n{report}")
    assert tally.cases >= CASES * 10, report
    assert not tally.errors, f"{report}\n{fuzz_server.log()[-4000:]}"
    assert status.status_code == 200, status.text
    assert status.json()["status"] == "good", status.text
    assert after <= idle + HEALTH_MARGIN_SECONDS, latency_line(idle, after)
