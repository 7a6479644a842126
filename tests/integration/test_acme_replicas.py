"""Two `mintca serve` processes on one database behind one public URL (as replicas behind a
load balancer): a nonce from one is accepted by the other, and an order started on one is
validated and finalized on the other. CI runs it on PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from app.ca.acme.jws import dns01_txt_value, key_authorization
from app.config import Settings
from tests.acme.conftest import AcmeClient
from tests.acme.dns_server import FakeDNS, running_dns
from tests.acme.flow import csr_der
from tests.acme.jose import public_jwk
from tests.integration.live import LiveServer, start_server, stop_server

ZONE = "test.internal"
SHARED_URL = "http://acme.replicas.test"
WAIT_SECONDS = 30
pytestmark = pytest.mark.slow


@pytest.fixture
def dns() -> Iterator[FakeDNS]:
    with running_dns(ZONE) as server:
        yield server


@pytest.fixture
def replicas(
    initialised_settings: Settings, tmp_path: Path, dns: FakeDNS
) -> Iterator[list[LiveServer]]:
    extra = {"MINTCA_ACME_DNS_RESOLVER": dns.resolver, "MINTCA_PUBLIC_URL": SHARED_URL}
    started = []
    try:
        for index in range(2):
            log = tmp_path / f"serve-{index}.log"
            started.append(start_server(initialised_settings, log, extra_env=extra))
        yield [server for _, server in started]
    finally:
        for process, _ in started:
            stop_server(process)


def test_replicas_share_nonces_and_orders(replicas: list[LiveServer], dns: FakeDNS) -> None:
    with replicas[0].admin_client() as admin:
        credential = admin.post("/admin/acme/eab", json={"names": [f"*.{ZONE}"]}).json()
    with (
        httpx.Client(base_url=replicas[0].public_url, timeout=30) as one,
        httpx.Client(base_url=replicas[1].public_url, timeout=30) as two,
    ):
        check_replicas(one, two, credential, dns)


def check_replicas(
    one: httpx.Client, two: httpx.Client, credential: dict[str, str], dns: FakeDNS
) -> None:
    client = AcmeClient(one, base=SHARED_URL)
    assert client.register(credential["kid"], credential["hmac_key"]).status_code == 201

    nonce_of_one = client.nonce()
    client.http = two
    checked = client.post(client.kid or "", None, nonce=nonce_of_one)
    assert checked.status_code == 200, checked.text
    again = client.post(client.kid or "", None, nonce=nonce_of_one)
    assert again.json()["type"].endswith(":badNonce"), again.text

    client.http = one
    name = f"replica.{ZONE}"
    created = client.post(
        client.directory["newOrder"], {"identifiers": [{"type": "dns", "value": name}]}
    )
    assert created.status_code == 201, created.text
    order_url = created.headers["Location"]
    authz = client.post(created.json()["authorizations"][0], None).json()
    challenge = next(c for c in authz["challenges"] if c["type"] == "dns-01")
    key_auth = key_authorization(challenge["token"], public_jwk(client.key))
    dns.txt[f"_acme-challenge.{name}"] = [dns01_txt_value(key_auth)]
    client.post(challenge["url"], {})

    client.http = two
    deadline = time.monotonic() + WAIT_SECONDS
    while (order := client.post(order_url, None).json())["status"] == "pending":
        assert time.monotonic() < deadline, order
        time.sleep(0.2)
    assert order["status"] == "ready", order
    done = client.post(order["finalize"], {"csr": csr_der(name)})
    assert done.json()["status"] == "valid", done.text
    chain = client.post(done.json()["certificate"], None)
    leaf = x509.load_pem_x509_certificates(chain.content)[0]
    status = one.get(f"/v1/certificates/{leaf.serial_number:x}/status")
    assert status.json()["status"] == "good", status.text
