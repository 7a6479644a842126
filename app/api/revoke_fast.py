"""The revocation fast path: a raw ASGI layer in front of the mtls app that answers
`POST /admin/certificates/{serial}/revoke` from an operator whose certificate was accepted
since the last status change (app.services.peers), with a JSON body, without FastAPI's routing,
middleware and per-dependency thread hops; the revocation waits on its batch's future
(app.services.status_batches) in the event loop, not in a thread.

It answers only what the route would answer the same way (the same checks in the same order,
the same bytes): any other request, a peer it cannot vouch for without a lookup that fails,
a role below operator, a body that is not JSON or does not fit RevokeRequest goes on to the
FastAPI app, body replayed, which answers it (403, 415, 400) as before.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.limits import read_body
from app.api.media import media_type_of
from app.api.problems import domain_problem, unexpected_problem
from app.api.routes.mtls.admin import details
from app.api.schemas import RevokeRequest
from app.errors import MintCAError
from app.services.container import Services
from app.services.peers import Peer, Role

log = logging.getLogger(__name__)

REVOKE_PATH = re.compile(r"/admin/certificates/([^/]+)/revoke")
# A revocation's body is a reason and a date; anything larger goes to the app's own limits.
MAX_FAST_BODY_BYTES = 4096


class RevokeFastPath:
    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self._services = services
        # Peer lookups in flight, by PEM: requests that miss together share one query.
        self._pending: dict[str, asyncio.Future[Peer | None]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = (
            REVOKE_PATH.fullmatch(scope["path"])
            if scope["type"] == "http" and scope["method"] == "POST"
            else None
        )
        if match is None:
            await self.app(scope, receive, send)
            return
        peer = await self._peer(scope)
        if peer is None or peer.role < Role.OPERATOR or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        body, receive = await read_body(scope, receive, limit=MAX_FAST_BODY_BYTES)
        request = _revoke_request(body)
        if request is None:
            await self.app(scope, receive, send)
            return
        response = await self._revoke(match[1], request, peer)
        await response(scope, receive, send)

    async def _peer(self, scope: Scope) -> Peer | None:
        """The accepted peer, or None (no certificate, refused: the app says why)."""
        tls = scope.get("extensions", {}).get("tls") or {}
        chain = tls.get("client_cert_chain") or []
        if not chain:
            return None
        pem: str = chain[0]
        peer = self._services.peers.cached(pem)
        if peer is not None:
            return peer
        waiting = self._pending.get(pem)
        if waiting is not None:
            return await asyncio.shield(waiting)
        waiting = asyncio.get_running_loop().create_future()
        self._pending[pem] = waiting
        found: Peer | None = None
        try:
            found = await run_in_threadpool(self._lookup, pem)
        finally:
            del self._pending[pem]
            waiting.set_result(found)
        return found

    def _lookup(self, pem: str) -> Peer | None:
        try:
            return self._services.peers.authenticate_pem(pem)
        except Exception:  # refused, database down, anything: the app asks again and answers
            return None

    async def _revoke(self, serial: str, request: RevokeRequest, peer: Peer) -> Response:
        services = self._services
        try:
            future = services.revocation.start_revoke(
                serial,
                reason=request.reason,
                invalidity_date=request.invalidity_date,
                actor=peer.actor,
            )
            info = await asyncio.wrap_future(future)
        except MintCAError as exc:
            return domain_problem(exc)
        except Exception as exc:  # what the app's last-resort handler does, too
            return unexpected_problem(exc)
        answer = details(info, services, with_pem=False)
        return Response(answer.model_dump_json().encode(), media_type="application/json")


def _is_json(scope: Scope) -> bool:
    """The mtls listener's CSRF guard (app.api.deps.require_json_writes) for this route."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            return media_type_of(value.decode("latin-1")) == "application/json"
    return False


def _revoke_request(body: bytes | None) -> RevokeRequest | None:
    """The body as the route would read it (json, then the model), or None when the route
    would refuse it."""
    if body is None:
        return None
    try:
        return RevokeRequest.model_validate(json.loads(body))
    except (ValueError, ValidationError):  # json's errors are ValueErrors
        return None
