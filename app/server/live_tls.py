"""Changing the listeners' live SSLContexts without a restart, in every worker: trust for CAs
made after start-up (a rotation anywhere), and the renewed server certificate. uvicorn built
the contexts from its own ssl_* options; this only adds to them, in the event loop's thread,
so no handshake sees a context half changed (new handshakes use the new state)."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from app.ca.issuance import pem_bundle
from app.server.background import report_failed_round
from app.services.container import Services
from app.services.keyring import Authority
from app.services.server_cert import ServerPair, is_due

log = logging.getLogger(__name__)

# Each tick is one small query (the CAs' ids and active flags) and one stat of server.pem.
WATCH_INTERVAL_SECONDS = 1.0

Stamp = tuple[int, int, int]


@dataclass
class LiveTLS:
    mtls: ssl.SSLContext
    serving: list[ssl.SSLContext]  # every context that presents server.pem
    trusted: set[str]  # ids of the CAs the mtls context trusts
    server_stamp: Stamp
    server_pair: ServerPair

    def trust(self, authorities: list[Authority]) -> list[str]:
        """Add CAs the mtls listener does not trust yet (never removes one: an old CA's
        certificates stay accepted until they, or it, expire). Returns the ids added."""
        added = []
        for authority in authorities:
            if authority.ca_id not in self.trusted:
                cadata = pem_bundle(authority.certificate).decode()
                self.mtls.load_verify_locations(cadata=cadata)
                self.trusted.add(authority.ca_id)
                added.append(authority.ca_id)
        return added

    def present(self, pair: ServerPair, path: Path) -> None:
        """Present the key and chain in `path` (a private copy of `pair`) on every listener
        that serves TLS; `read()` checked that key and certificate belong together."""
        for context in self.serving:
            context.load_cert_chain(str(path))
        self.server_pair = pair


@dataclass(frozen=True)
class _Replacement:
    stamp: Stamp
    pair: ServerPair
    path: Path | None  # None when the content is what is already presented


def _private_copy(pair: ServerPair, directory: Path) -> Path:
    """`load_cert_chain` reads files only: a 0600 copy beside the key, removed after loading."""
    fd, name = tempfile.mkstemp(prefix=".server-live-", suffix=".pem", dir=directory)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pair.pem)
    return Path(name)


def _check_server_files(
    services: Services, stamp: Stamp, presented: x509.Certificate, fingerprint: str
) -> _Replacement | None:
    """In a worker thread: renew when the presented certificate is due (one process of the
    data dir does it), then notice a replaced server.pem, whoever replaced it."""
    if is_due(presented, services.clock.now()):
        services.server_cert.renew_if_due()
    current = services.server_cert.stamp()
    if current == stamp:
        return None
    pair = services.server_cert.read()
    if pair.fingerprint == fingerprint:
        return _Replacement(current, pair, None)
    return _Replacement(current, pair, _private_copy(pair, services.settings.data_dir))


async def watch_once(services: Services, live: LiveTLS) -> None:
    await asyncio.to_thread(services.keyring.refresh)
    added = live.trust(services.keyring.all())
    if added:
        log.info("mtls listener now trusts CA %s", ", ".join(added))
    replacement = await asyncio.to_thread(
        _check_server_files,
        services,
        live.server_stamp,
        live.server_pair.certificate,
        live.server_pair.fingerprint,
    )
    if replacement is None:
        return
    if replacement.path is not None:
        try:
            live.present(replacement.pair, replacement.path)
        finally:
            replacement.path.unlink(missing_ok=True)
        not_after = replacement.pair.certificate.not_valid_after_utc
        log.info("serving the server certificate valid until %s", not_after)
    live.server_stamp = replacement.stamp


async def watch_forever(services: Services, live: LiveTLS) -> None:
    """Every worker runs this: a rotation anywhere, and a renewed or replaced server
    certificate, reach this worker's listeners within WATCH_INTERVAL_SECONDS."""
    while True:
        try:
            await watch_once(services, live)
        except Exception as exc:
            report_failed_round(log, "refreshing the listeners' TLS", exc)
        await asyncio.sleep(WATCH_INTERVAL_SECONDS)
