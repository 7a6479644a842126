"""KEK rotation: every CA and OCSP responder key, and every ACME EAB key, re-wrapped under a
new KEK in one transaction, audited. The key material does not change, so processes that hold
the keys unwrapped keep signing; see README "Rotating the KEK" for how old and new KEKs
coexist."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app.ca.keys import kek_id, unwrap_secret, wrap_secret, wrapped_kek_id
from app.clock import Clock
from app.db import acme as acme_queries
from app.db import responders as responder_queries
from app.db.cas import lock_all_cas
from app.db.engine import Database
from app.errors import ConfigurationError
from app.services.audit import record


@dataclass(frozen=True)
class KEKRotation:
    previous_ids: tuple[str, ...]  # the KEKs the keys were wrapped under ("legacy": no id)
    kek_id: str
    cas: int
    responders: int


def rewrap_keys(
    db: Database, *, keks: Sequence[bytes], new_kek: bytes, clock: Clock, actor: str
) -> KEKRotation:
    """Re-wrap every key under `new_kek`, unwrapping with any of `keks` (or `new_kek`, so a
    rotation interrupted after its KEK file was written can be run again).

    Holds every CA row's lock, so a process wrapping a new responder key under its CA's
    lock either commits before (and its key is re-wrapped here) or waits and then sees, in
    the CA row, the KEK it must use.

    Raises:
        ConfigurationError: a key that none of the KEKs unwraps (nothing is changed).
    """
    candidates = [new_kek, *keks]
    previous: set[str] = set()

    def rewrap(blob: bytes, label: str) -> bytes:
        try:
            secret = unwrap_secret(blob, kek=candidates, label=label)
        except ValueError as exc:
            raise ConfigurationError(f"{exc}; nothing was changed") from exc
        previous.add(wrapped_kek_id(blob) or "legacy")
        return wrap_secret(secret, kek=new_kek, label=label)

    with db.write() as session:
        # An offline root's key and keys in a PKCS#11 token are not wrapped: nothing to move.
        cas = [ca for ca in lock_all_cas(session) if ca.key_wrapped is not None]
        responders = responder_queries.lock_all(session)
        for ca in cas:
            assert ca.key_wrapped is not None
            ca.key_wrapped = rewrap(ca.key_wrapped, ca.id)
        for responder in responders:
            responder.key_wrapped = rewrap(responder.key_wrapped, f"ocsp:{responder.serial}")
        credentials = acme_queries.lock_all_credentials(session)
        for credential in credentials:
            credential.key_wrapped = rewrap(credential.key_wrapped, f"acme-eab:{credential.kid}")
        rotation = KEKRotation(tuple(sorted(previous)), kek_id(new_kek), len(cas), len(responders))
        record(
            session,
            at=clock.now(),
            actor=actor,
            action="kek.rotate",
            target=rotation.kek_id,
            details={
                "previous": list(rotation.previous_ids),
                "cas": rotation.cas,
                "responders": rotation.responders,
                "acme_eab_credentials": len(credentials),
            },
        )
    return rotation
