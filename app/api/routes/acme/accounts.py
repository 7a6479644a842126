"""newAccount, account update and deactivation (RFC 8555 §7.3)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from app.api.deps import ServicesDep
from app.api.routes.acme.common import account_json, acme_json, verified
from app.errors import AcmeProblemError

router = APIRouter(tags=["acme"])


@router.post("/new-account")
async def new_account(request: Request, services: ServicesDep) -> Response:
    signed = await verified(request, key_may_sign=True)
    url = services.acme.urls("new-account")
    result = await run_in_threadpool(services.acme.accounts.new_account, signed, url)
    return acme_json(
        account_json(result.account),
        status=201 if result.created else 200,
        location=result.account.url,
    )


@router.post("/acct/{account_id}")
async def update_account(account_id: str, request: Request, services: ServicesDep) -> Response:
    signed = await verified(request)
    if signed.account is None or signed.account.id != account_id:
        raise AcmeProblemError("unauthorized", "sign with this account's key", status=403)
    account = await run_in_threadpool(services.acme.accounts.update_account, signed)
    return acme_json(account_json(account), location=account.url)


@router.post("/key-change")
async def key_change(request: Request, services: ServicesDep) -> Response:
    signed = await verified(request)
    url = services.acme.urls("key-change")
    account = await run_in_threadpool(services.acme.accounts.change_key, signed, url)
    return acme_json(account_json(account), location=account.url)


@router.post("/acct/{account_id}/orders")
async def list_orders(
    account_id: str, request: Request, services: ServicesDep, cursor: str | None = None
) -> Response:
    """RFC 8555 §7.1.2.1: a page of orders; Link rel="next" names the next page, if any."""
    signed = await verified(request)
    if signed.account is None or signed.account.id != account_id:
        raise AcmeProblemError("unauthorized", "sign with this account's key", status=403)
    page = await run_in_threadpool(services.acme.orders.order_page, signed, cursor)
    urls = services.acme.urls
    response = acme_json({"orders": [urls(f"order/{i}") for i in page.order_ids]})
    if page.next_cursor is not None:
        next_url = f"{urls.account(account_id)}/orders?cursor={page.next_cursor}"
        response.headers.append("Link", f'<{next_url}>;rel="next"')
    return response
