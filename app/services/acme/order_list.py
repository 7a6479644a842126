"""The account's orders list (RFC 8555 §7.1.2.1), paged by keyset: each page ends with a
cursor naming the last order's (created_at, id), and the next page starts strictly after it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from app.ca.acme.jws import malformed
from app.db import acme as queries
from app.db.engine import Database
from app.services.acme.requests import VerifiedRequest

# Orders per page: certbot and lego never read the list, and an operator's script gets a
# hundred URLs (~6 KiB) per request; the next page is one indexed range read.
ORDERS_PAGE_SIZE = 100
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# "<microseconds since the epoch>.<order id>"; order ids are base64url (token_urlsafe).
_CURSOR = re.compile(r"(\d{1,17})\.([A-Za-z0-9_-]{1,64})")


@dataclass(frozen=True)
class OrderPage:
    order_ids: list[str]
    next_cursor: str | None  # None on the last page


def format_cursor(created_at: datetime, order_id: str) -> str:
    return f"{(created_at - _EPOCH) // _MICROSECOND}.{order_id}"


def parse_cursor(cursor: str) -> tuple[datetime, str]:
    """Raises: AcmeProblemError: malformed (not a cursor this server gave)."""
    match = _CURSOR.fullmatch(cursor)
    if match is None:
        raise malformed("the cursor is not one this server gave; start from the orders URL")
    return _EPOCH + int(match[1]) * _MICROSECOND, match[2]  # 17 digits stay below year 9999


def order_page(
    db: Database,
    request: VerifiedRequest,
    account_id: str,
    cursor: str | None,
    *,
    page_size: int = ORDERS_PAGE_SIZE,
) -> OrderPage:
    """One page of the account's orders, newest first. Stable under inserts: a new order sorts
    before every page already read, so a walk neither repeats nor skips an order.

    Raises:
        AcmeProblemError: malformed (a payload: the list is read with POST-as-GET, RFC 8555
            §6.3; or a bad cursor).
    """
    if not request.is_post_as_get:
        raise malformed("the orders list is read with POST-as-GET (an empty payload)")
    after = parse_cursor(cursor) if cursor is not None else None
    with db.read() as session:
        # One row more than a page tells whether a next page exists.
        rows = queries.order_page_of(session, account_id, after=after, limit=page_size + 1)
    page = rows[:page_size]
    has_next = len(rows) > page_size
    next_cursor = format_cursor(page[-1][1], page[-1][0]) if has_next else None
    return OrderPage([order_id for order_id, _ in page], next_cursor)
