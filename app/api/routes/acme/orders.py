"""Orders, authorizations, challenges, finalize, certificate download and revokeCert
(RFC 8555 §7.4-7.6). Every one is a signed POST (POST-as-GET to read)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from app.api.deps import ServicesDep
from app.api.media import PEM_CHAIN, pem
from app.api.routes.acme.common import (
    acme_json,
    authorization_json,
    challenge_json,
    order_json,
    verified,
)

router = APIRouter(tags=["acme"])


@router.post("/new-order")
async def new_order(request: Request, services: ServicesDep) -> Response:
    signed = await verified(request)
    order = await run_in_threadpool(services.acme.orders.new_order, signed)
    urls = services.acme.urls
    return acme_json(order_json(order, urls), status=201, location=urls(f"order/{order.id}"))


@router.post("/order/{order_id}")
async def get_order(order_id: str, request: Request, services: ServicesDep) -> Response:
    signed = await verified(request)
    order = await run_in_threadpool(services.acme.orders.get_order, signed, order_id)
    urls = services.acme.urls
    return acme_json(order_json(order, urls), location=urls(f"order/{order.id}"))


@router.post("/order/{order_id}/finalize")
async def finalize(order_id: str, request: Request, services: ServicesDep) -> Response:
    signed = await verified(request)
    order = await run_in_threadpool(services.acme.orders.finalize, signed, order_id)
    urls = services.acme.urls
    return acme_json(order_json(order, urls), location=urls(f"order/{order.id}"))


@router.post("/authz/{authz_id}")
async def get_authorization(authz_id: str, request: Request, services: ServicesDep) -> Response:
    signed = await verified(request)
    authz = await run_in_threadpool(services.acme.orders.get_authorization, signed, authz_id)
    return acme_json(authorization_json(authz, services.acme.urls))


@router.post("/chall/{challenge_id}")
async def respond_challenge(challenge_id: str, request: Request, services: ServicesDep) -> Response:
    signed = await verified(request)
    orders = services.acme.orders
    challenge = await run_in_threadpool(orders.respond_challenge, signed, challenge_id)
    urls = services.acme.urls
    response = acme_json(challenge_json(challenge, urls))
    authz_id = await run_in_threadpool(orders.authorization_id_of, challenge_id)
    response.headers["Link"] = f'<{urls(f"authz/{authz_id}")}>;rel="up"'
    return response


@router.post("/cert/{serial}")
async def certificate(serial: str, request: Request, services: ServicesDep) -> Response:
    signed = await verified(request)
    chain = await run_in_threadpool(services.acme.certificates.certificate_chain, signed, serial)
    return Response(pem(*chain), media_type=PEM_CHAIN)


@router.post("/revoke-cert")
async def revoke_certificate(request: Request, services: ServicesDep) -> Response:
    signed = await verified(request, key_may_sign=True)
    await run_in_threadpool(services.acme.certificates.revoke, signed)
    return Response(status_code=200)
