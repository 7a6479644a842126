"""The account's orders list (RFC 8555 §7.1.2.1): pages linked by Link rel="next" and a
keyset cursor, walked to the end; stable when orders arrive during a walk; POST-as-GET only;
a bad cursor is a malformed problem."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
import pytest

from app.clock import FixedClock
from app.db.models import AcmeOrderRecord
from app.services.acme.order_list import ORDERS_PAGE_SIZE
from app.services.container import Services
from tests.acme.conftest import ZONE, AcmeClient
from tests.acme.flow import new_order, problem

_NEXT = re.compile(r'<([^>]+)>;rel="next"')


def next_link(response: httpx.Response) -> str | None:
    """The rel="next" target among the answer's Link headers (rel="index" is always there)."""
    for link in response.headers.get_list("Link"):
        match = _NEXT.fullmatch(link.strip())
        if match:
            return match[1]
    return None


def walk(client: AcmeClient, url: str) -> list[list[str]]:
    """Every page from `url` on, following rel="next" with POST-as-GET."""
    pages: list[list[str]] = []
    next_url: str | None = url
    while next_url is not None:
        response = client.post(next_url, None)
        assert response.status_code == 200, response.text
        pages.append(response.json()["orders"])
        next_url = next_link(response)
        assert len(pages) < 50, "the walk does not end"
    return pages


def orders_url(client: AcmeClient) -> str:
    url: str = client.post(client.kid or "", None).json()["orders"]
    return url


def test_pages_are_walked_to_the_end_newest_first(
    account: AcmeClient, acme_services: Services, clock: FixedClock
) -> None:
    acme_services.acme.orders.page_size = 2
    made = []
    for index in range(5):
        made.append(new_order(account, f"page{index}.{ZONE}")[0])
        clock.advance(seconds=1)

    pages = walk(account, orders_url(account))

    assert pages == [made[4:2:-1], made[2:0:-1], made[0:1]], pages


def test_orders_made_in_the_same_microsecond_are_each_listed_once(
    account: AcmeClient, acme_services: Services
) -> None:
    """The FixedClock gives every order the same created_at: the id breaks the tie."""
    acme_services.acme.orders.page_size = 3
    made = {new_order(account, f"tie{index}.{ZONE}")[0] for index in range(7)}

    pages = walk(account, orders_url(account))

    assert [len(page) for page in pages] == [3, 3, 1], pages
    assert {url for page in pages for url in page} == made


def test_a_walk_is_stable_when_orders_arrive_meanwhile(
    account: AcmeClient, acme_services: Services, clock: FixedClock
) -> None:
    acme_services.acme.orders.page_size = 2
    made = []
    for index in range(4):
        made.append(new_order(account, f"old{index}.{ZONE}")[0])
        clock.advance(seconds=1)
    first = account.post(orders_url(account), None)
    second_url = next_link(first)
    assert second_url is not None, first.headers

    arrived = new_order(account, f"new.{ZONE}")[0]
    rest = walk(account, second_url)

    assert first.json()["orders"] + [u for page in rest for u in page] == made[::-1]
    assert walk(account, orders_url(account))[0][0] == arrived


def test_the_real_page_size_over_many_orders(account: AcmeClient, acme_services: Services) -> None:
    """ORDERS_PAGE_SIZE orders a page (rows written directly: 2.5 pages of newOrder would be
    slow); the last page carries no next link."""
    account_id = (account.kid or "").rsplit("/", 1)[-1]
    start = acme_services.clock.now()
    count = ORDERS_PAGE_SIZE * 2 + ORDERS_PAGE_SIZE // 2
    with acme_services.db.write() as session:
        session.add_all(
            AcmeOrderRecord(
                id=f"bulk{index:05d}",
                account_id=account_id,
                status="pending",
                identifiers=[{"type": "dns", "value": f"b{index}.{ZONE}"}],
                not_after=None,
                expires_at=start + timedelta(days=7),
                error=None,
                certificate_serial=None,
                created_at=start - timedelta(seconds=index // 3),  # some share a second
            )
            for index in range(count)
        )

    pages = walk(account, orders_url(account))

    assert [len(page) for page in pages] == [ORDERS_PAGE_SIZE] * 2 + [ORDERS_PAGE_SIZE // 2]
    ids = [url.rsplit("/", 1)[-1] for page in pages for url in page]
    newest_first = sorted(range(count), key=lambda index: (index // 3, -index))
    assert ids == [f"bulk{index:05d}" for index in newest_first], ids


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "x",
        "12.",
        ".abc",
        "12.a/b",
        "-1.abc",
        "1" * 18 + ".abc",
        "12.abc%00",
        "12.abc%0A",
        "12.%C3%A9",
        "12.abc&cursor=",
    ],
    ids=[
        "empty",
        "no-dot",
        "no-id",
        "no-time",
        "slash",
        "negative",
        "too-long",
        "nul",
        "newline",
        "utf8",
        "repeated-empty",
    ],
)
def test_a_bad_cursor_is_malformed(account: AcmeClient, cursor: str) -> None:
    url = f"{orders_url(account)}?cursor={cursor}"
    problem(account.post(url, None), 400, "malformed")


def test_the_list_is_read_with_post_as_get_only(account: AcmeClient) -> None:
    url = orders_url(account)
    problem(account.post(url, {}), 400, "malformed")
    get = account.http.get(account.path(url))
    problem(get, 405, "malformed")


def test_another_accounts_cursor_only_positions_the_walk(
    account: AcmeClient, acme_services: Services
) -> None:
    """A cursor is a position, not a capability: signed by another account for its own list,
    it lists that account's orders only."""
    acme_services.acme.orders.page_size = 1
    new_order(account, f"a1.{ZONE}")
    new_order(account, f"a2.{ZONE}")
    second = next_link(account.post(orders_url(account), None))
    assert second is not None
    cursor = second.split("?", 1)[1]
    made = acme_services.acme.accounts.create_credential(
        names=[f"*.{ZONE}"], profile=None, max_validity_days=None, actor="test"
    )
    other = AcmeClient(account.http)
    assert other.register(made.kid, made.hmac_key).status_code == 201
    listed = other.post(f"{orders_url(other)}?{cursor}", None)
    assert listed.status_code == 200, listed.text
    assert listed.json() == {"orders": []}, listed.text
