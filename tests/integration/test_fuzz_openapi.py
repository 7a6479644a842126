"""schemathesis against both listeners' own OpenAPI documents, over real sockets: the public
listener in plain HTTP with a token of many uses, the mtls listener over real TLS with the
admin certificate. Positive and negative cases for every operation, a bounded number each.

The result must be zero 5xx, and `/health` must answer within 50 ms of its idle latency
afterwards (measured before and after on the public listener).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import given
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from app.config import Settings
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
from tests.integration.live import LiveServer, start_server, stop_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CASES_PER_LISTENER = 300
MIN_CASES_PER_OPERATION = 12
CASES_WITHOUT_INPUT = 3
MAX_ROUNDS = 4
# Operations that can take the admin certificate away (revoking it, alone or in bulk) or
# change the CA (a rotation makes a key, RSA-4096 if asked) run last and fewer times, so
# they cannot starve or stretch the rest of the run.
DESTRUCTIVE_WORDS = ("revoke", "revocations", "rotate", "unhold")
CASES_DESTRUCTIVE = 6  # per mode


@pytest.fixture
def fuzz_server(initialised_settings: Settings, tmp_path: Path) -> Iterator[LiveServer]:
    process, server = start_server(initialised_settings, tmp_path / "serve.log", workers=2)
    try:
        yield server
    finally:
        stop_server(process)


def on_postgresql(server: LiveServer) -> bool:
    return server.settings.effective_database_url.startswith("postgresql")


def destructive(operation: schemathesis.APIOperation) -> bool:
    return any(word in operation.path for word in DESTRUCTIVE_WORDS)


def has_inputs(operation: schemathesis.APIOperation) -> bool:
    parts = (operation.path_parameters, operation.query, operation.headers, operation.body)
    return any(len(part) for part in parts)


@dataclass
class Fuzzer:
    """One listener's run: its connection (TLS settings passed on every call), fixed headers
    (the enrollment token) and the tally."""

    session: requests.Session
    tally: Tally
    transport: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] | None = None
    postgresql: bool = False
    unsatisfiable: set[str] = field(default_factory=set)
    # One printed seed per run (each operation's run derives its own from it), so a failure
    # in CI can be replayed; Hypothesis' own "reproduce with @seed" lines stay out of the log.
    seed: int = field(default_factory=lambda: random.SystemRandom().getrandbits(32))
    runs: int = 0

    def load(self, url: str) -> schemathesis.BaseSchema:
        return schemathesis.openapi.from_url(url, timeout=REQUEST_TIMEOUT_SECONDS, **self.transport)

    def run(self, schema: schemathesis.BaseSchema) -> None:
        """Every operation: CASES_PER_LISTENER cases shared by the operations that take input
        (positive and negative, half each), a few positive ones for the rest."""
        operations = [result.ok() for result in schema.get_all_operations()]
        operations.sort(key=destructive)
        with_inputs = sum(1 for op in operations if has_inputs(op) and not destructive(op))
        per_mode = max(MIN_CASES_PER_OPERATION, CASES_PER_LISTENER // max(1, with_inputs)) // 2
        # Hypothesis stops early on an operation whose inputs it has exhausted (a path with
        # one short parameter): further rounds, each with a fresh seed, fill the budget.
        for round_ in range(MAX_ROUNDS):
            if self.tally.cases >= CASES_PER_LISTENER:
                break
            for operation in operations:
                if round_ and self.tally.cases >= CASES_PER_LISTENER:
                    break  # the first round covers every operation; later ones only top up
                if not has_inputs(operation):
                    self.fuzz(operation, GenerationMode.POSITIVE, CASES_WITHOUT_INPUT)
                    continue
                cases = CASES_DESTRUCTIVE if destructive(operation) else per_mode
                self.fuzz(operation, GenerationMode.POSITIVE, cases)
                self.fuzz(operation, GenerationMode.NEGATIVE, cases)

    def fuzz(
        self, operation: schemathesis.APIOperation, mode: GenerationMode, max_examples: int
    ) -> None:
        strategy = operation.as_strategy(generation_mode=mode, headers=self.headers)

        self.runs += 1

        @bounded(max_examples)
        @hypothesis.seed(self.seed + self.runs)
        @given(case=strategy)
        def call(case: schemathesis.Case) -> None:
            self.send(case, mode)

        try:
            call()
        except Unsatisfiable:
            # Some negative cases cannot be made: a string parameter with no constraint
            # accepts anything (the positive cases still fuzz it).
            assert mode is GenerationMode.NEGATIVE, operation.label
            self.unsatisfiable.add(operation.label)

    def send(self, case: schemathesis.Case, mode: GenerationMode) -> None:
        query = case.query if isinstance(case.query, dict) else {}
        body = case.body if isinstance(case.body, str | bytes | dict | list) else "no body"
        request = f"{case.method} {case.formatted_path} {query} ({mode.value}) {body!r:.200}"
        try:
            response = self.tally.send(
                lambda: case.call(
                    session=self.session, timeout=REQUEST_TIMEOUT_SECONDS, **self.transport
                ),
                (requests.ConnectionError,),
            )
        except (requests.Timeout, requests.ConnectionError) as exc:  # no answer at all
            self.tally.record_no_answer(request, exc)
            return
        content_type = response.headers.get("content-type", [""])[0]
        known = known_defect(case.formatted_path, query, postgresql=self.postgresql)
        self.tally.record(
            request, response.status_code, content_type, response.content, known=known
        )

    def report(self) -> str:
        return (
            f"{self.tally.report()}\nseed {self.seed}; "
            f"no negative cases possible: {sorted(self.unsatisfiable)}"
        )


def test_schemathesis_public_listener(fuzz_server: LiveServer) -> None:
    with fuzz_server.admin_client() as admin:
        made = admin.post(
            "/admin/tokens", json={"names": ["*.internal", "*.example.com"], "max_uses": 1000}
        )
        assert made.status_code == 201, made.text
    idle = health_latency(fuzz_server.public_url)
    with requests.Session() as session:
        fuzzer = Fuzzer(
            session,
            Tally("schemathesis, public listener"),
            headers={"Authorization": f"Bearer {made.json()['token']}"},
            postgresql=on_postgresql(fuzz_server),
        )
        fuzzer.run(fuzzer.load(f"{fuzz_server.public_url}/openapi.json"))
    after = latency_after(fuzz_server.public_url, idle)

    print(f"\n{fuzzer.report()}\n{latency_line(idle, after)}")
    assert fuzzer.tally.cases >= CASES_PER_LISTENER, fuzzer.report()
    assert not fuzzer.tally.errors, f"{fuzzer.report()}\n{fuzz_server.log()[-4000:]}"
    assert after <= idle + HEALTH_MARGIN_SECONDS, latency_line(idle, after)


def test_schemathesis_mtls_listener_as_admin(fuzz_server: LiveServer) -> None:
    data = fuzz_server.data_dir
    idle = health_latency(fuzz_server.public_url)
    with requests.Session() as session:
        fuzzer = Fuzzer(
            session,
            Tally("schemathesis, mtls listener (admin certificate, real TLS)"),
            transport={
                "verify": str(fuzz_server.root_pem),
                "cert": (str(data / "admin.pem"), str(data / "admin-key.pem")),
            },
            postgresql=on_postgresql(fuzz_server),
        )
        fuzzer.run(fuzzer.load(f"{fuzz_server.mtls_url}/openapi.json"))
    after = latency_after(fuzz_server.public_url, idle)

    print(f"\n{fuzzer.report()}\n{latency_line(idle, after)}")
    assert fuzzer.tally.cases >= CASES_PER_LISTENER, fuzzer.report()
    assert not fuzzer.tally.errors, f"{fuzzer.report()}\n{fuzz_server.log()[-4000:]}"
    assert after <= idle + HEALTH_MARGIN_SECONDS, latency_line(idle, after)
