"""What every ACME route shares: reading and verifying the JWS body, JSON representations of
ACME objects (RFC 8555 §7.1), and the headers every answer carries."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.deps import get_services
from app.api.media import media_type_of
from app.errors import AcmeProblemError
from app.services.acme.orders import Authorization, Challenge, Order
from app.services.acme.requests import Account, AcmeUrls, VerifiedRequest

JOSE_JSON = "application/jose+json"


async def verified(request: Request, *, key_may_sign: bool = False) -> VerifiedRequest:
    """The request's JWS, checked (RFC 8555 §6.2: only application/jose+json is taken).

    Raises:
        AcmeProblemError: as AcmeRequests.verify, or malformed (415) for another media type.
    """
    if media_type_of(request.headers.get("content-type")) != JOSE_JSON:
        raise AcmeProblemError("malformed", f"send {JOSE_JSON}", status=415)
    body = await request.body()
    services = get_services(request)
    url = services.acme.urls.base + request.url.path
    if request.url.query:  # the orders list's next page: the url signed includes the query
        url += f"?{request.url.query}"
    return await run_in_threadpool(
        services.acme.requests.verify, body, url, key_may_sign=key_may_sign
    )


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def acme_json(
    document: dict[str, Any], *, status: int = 200, location: str | None = None
) -> Response:
    headers = {"Location": location} if location else None
    return Response(
        json.dumps(document), status_code=status, media_type="application/json", headers=headers
    )


def account_json(account: Account) -> dict[str, Any]:
    return {"status": account.status, "contact": account.contact, "orders": f"{account.url}/orders"}


def order_json(order: Order, urls: AcmeUrls) -> dict[str, Any]:
    document: dict[str, Any] = {
        "status": order.status,
        "expires": rfc3339(order.expires_at),
        "identifiers": [i.as_json() for i in order.identifiers],
        "authorizations": [urls(f"authz/{a}") for a in order.authorization_ids],
        "finalize": urls(f"order/{order.id}/finalize"),
    }
    if order.not_after is not None:
        document["notAfter"] = rfc3339(order.not_after)
    if order.error is not None:
        document["error"] = order.error
    if order.certificate_serial is not None:
        document["certificate"] = urls(f"cert/{order.certificate_serial}")
    return document


def challenge_json(challenge: Challenge, urls: AcmeUrls) -> dict[str, Any]:
    document: dict[str, Any] = {
        "type": challenge.type,
        "url": urls(f"chall/{challenge.id}"),
        "status": challenge.status,
        "token": challenge.token,
    }
    if challenge.validated_at is not None:
        document["validated"] = rfc3339(challenge.validated_at)
    if challenge.error is not None:
        document["error"] = challenge.error
    return document


def authorization_json(authz: Authorization, urls: AcmeUrls) -> dict[str, Any]:
    document: dict[str, Any] = {
        "identifier": {"type": authz.identifier.type, "value": authz.identifier.base_name},
        "status": authz.status,
        "expires": rfc3339(authz.expires_at),
        "challenges": [challenge_json(c, urls) for c in authz.challenges],
    }
    if authz.identifier.wildcard:
        document["wildcard"] = True  # RFC 8555 §7.1.4
    return document


class AcmeHeaders:
    """Every ACME answer, errors included, carries a fresh Replay-Nonce (RFC 8555 §6.5), the
    directory as Link rel=index (§7.1) and Cache-Control: no-store (§6.5: nonces)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        services = scope["app"].state.services

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                nonce = await run_in_threadpool(services.acme.requests.new_nonce)
                index = services.acme.urls("directory")
                message["headers"] = [
                    *message.get("headers", []),
                    (b"replay-nonce", nonce.encode()),
                    (b"link", f'<{index}>;rel="index"'.encode()),
                    (b"cache-control", b"no-store"),
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)
