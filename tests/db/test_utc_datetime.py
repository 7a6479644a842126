"""UTCDateTime on SQLite writes exactly the text SQLAlchemy's own DATETIME writes (so old and
new rows sort and compare alike, and read back the same), from one `isoformat` call."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Column, Integer, MetaData, Table, create_engine, insert, select, text
from sqlalchemy.dialects import sqlite

from app.db.models import UTCDateTime

DIALECT = sqlite.dialect()


def processor(type_: UTCDateTime | sqlite.DATETIME) -> Callable[[datetime | None], Any]:
    process = type_.bind_processor(DIALECT)
    assert process is not None
    return process


OURS = processor(UTCDateTime())
STOCK = processor(sqlite.DATETIME())

aware = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone.min]),
)


@given(aware)
def test_the_text_is_sqlalchemys_own_for_the_same_utc_time(moment: datetime) -> None:
    assert OURS(moment) == STOCK(moment.astimezone(UTC).replace(tzinfo=None))


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 12, 7, 0, 6, 36, tzinfo=UTC),  # no microseconds: still six digits
        datetime(999, 1, 1, tzinfo=UTC),  # a year of three digits: four, as %04d
        datetime(2026, 1, 1, 2, 0, 0, 1, tzinfo=timezone(timedelta(hours=2))),
    ],
)
def test_edge_times(moment: datetime) -> None:
    assert OURS(moment) == STOCK(moment.astimezone(UTC).replace(tzinfo=None))


def test_none_and_naive() -> None:
    assert OURS(None) is None
    with pytest.raises(ValueError, match="naive"):
        OURS(datetime(2026, 1, 1))


def test_stored_and_read_back_through_sqlite(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'times.db'}")
    table = Table(
        "times", MetaData(), Column("id", Integer, primary_key=True), Column("at", UTCDateTime())
    )
    table.metadata.create_all(engine)
    moment = datetime(2026, 12, 7, 1, 2, 3, 456, tzinfo=timezone(timedelta(hours=1)))
    with engine.begin() as connection:
        connection.execute(insert(table), [{"id": 1, "at": moment}])
        stored = connection.execute(text("SELECT at FROM times")).scalar_one()
        read = connection.execute(select(table.c.at)).scalar_one()
        found = connection.execute(select(table.c.id).where(table.c.at == moment)).scalar_one()
    engine.dispose()
    assert stored == "2026-12-07 00:02:03.000456"
    assert read == moment
    assert read.tzinfo == UTC
    assert found == 1
