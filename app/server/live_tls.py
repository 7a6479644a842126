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
from pathlib import Path

from app.ca.issuance import pem_bundle
from app.services.container import Services
from app.services.keyring import Authority
from app.services.server_cert import ServerPair

log = logging.getLogger(__name__)

WATCH_INTERVAL_SECONDS = 1.0
# The server certificate file is looked at once a minute (and at start): renewal is due
# months ahead, so a minute is plenty, and the CA check stays the only per-second work.
SERVER_CERT_EVERY_TICKS = 60


class LiveTLS:
    def __init__(
        self,
        *,
        mtls: ssl.SSLContext,
        serving: list[ssl.SSLContext],
        trusted: set[str],
        server_fingerprint: str,
    ) -> None:
        self._mtls = mtls
        self._serving = serving  # every context that presents server.pem
        self.trusted = trusted
        self.server_fingerprint = server_fingerprint

    def trust(self, authorities: list[Authority]) -> list[str]:
        """Add CAs the mtls listener does not trust yet (never removes one: an old CA's
        certificates stay accepted until they, or it, expire). Returns the ids added."""
        added = []
        for authority in authorities:
            if authority.ca_id not in self.trusted:
                cadata = pem_bundle(authority.certificate).decode()
                self._mtls.load_verify_locations(cadata=cadata)
                self.trusted.add(authority.ca_id)
                added.append(authority.ca_id)
        return added

    def load_server_pair(self, pair: ServerPair, path: Path) -> None:
        """Present the key and chain in `path` (a private copy of `pair`) on every listener
        that serves TLS."""
        for context in self._serving:
            context.load_cert_chain(str(path))
        self.server_fingerprint = pair.fingerprint


def _private_copy(pair: ServerPair, directory: Path) -> Path:
    """`load_cert_chain` reads files only: a 0600 copy beside the key, removed after loading."""
    fd, name = tempfile.mkstemp(prefix=".server-live-", suffix=".pem", dir=directory)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pair.pem)
    return Path(name)


async def watch_once(services: Services, live: LiveTLS, *, server_cert: bool) -> None:
    await asyncio.to_thread(services.keyring.refresh)
    added = live.trust(services.keyring.all())
    if added:
        log.info("mtls listener now trusts CA %s", ", ".join(added))
    if not server_cert:
        return
    await asyncio.to_thread(services.server_cert.renew_if_due)
    pair = await asyncio.to_thread(services.server_cert.read)
    if pair.fingerprint == live.server_fingerprint:
        return
    path = await asyncio.to_thread(_private_copy, pair, services.settings.data_dir)
    try:
        live.load_server_pair(pair, path)
    finally:
        path.unlink(missing_ok=True)
    log.info("serving the server certificate valid until %s", pair.certificate.not_valid_after_utc)


async def watch_forever(services: Services, live: LiveTLS) -> None:
    """Every worker runs this: CA changes are seen within WATCH_INTERVAL_SECONDS, server
    certificate renewals within a minute."""
    tick = 0
    while True:
        try:
            await watch_once(services, live, server_cert=tick % SERVER_CERT_EVERY_TICKS == 0)
        except Exception:
            log.exception("refreshing the listeners' TLS failed; retrying")
        tick += 1
        await asyncio.sleep(WATCH_INTERVAL_SECONDS)
