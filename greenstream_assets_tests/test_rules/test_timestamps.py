"""Rule 3 (parsing): ISO 8601 text to UTC instants, with and without zone, DST edges."""

from __future__ import annotations

from datetime import date, datetime

import polars as pl
import pytest

from greenstream_assets.rules.timestamps import parse_timestamp, utc_day

from .helpers import utc


def parse(texts: list[str | None], timezone: str = "UTC") -> pl.Series:
    frame = pl.DataFrame({"t": texts}, schema={"t": pl.String})
    return frame.select(ts=parse_timestamp("t", timezone)).get_column("ts")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-06-03T08:15:00Z", utc(2024, 6, 3, 8, 15)),
        ("2024-06-03T08:15:00z", utc(2024, 6, 3, 8, 15)),
        ("2024-06-03 08:15:00Z", utc(2024, 6, 3, 8, 15)),
        ("2024-06-03T08:15:00", utc(2024, 6, 3, 8, 15)),
        ("2024-06-03 08:15:00", utc(2024, 6, 3, 8, 15)),
        ("2024-06-03T08:15", utc(2024, 6, 3, 8, 15)),
        ("2024-06-03T08:15Z", utc(2024, 6, 3, 8, 15)),
        ("2024-06-03T08:15:00+01:00", utc(2024, 6, 3, 7, 15)),
        ("2024-06-03T08:15:00+0100", utc(2024, 6, 3, 7, 15)),
        ("2024-06-03 08:15:00+01:00", utc(2024, 6, 3, 7, 15)),
        ("2024-06-03T08:15+01:00", utc(2024, 6, 3, 7, 15)),
        ("2024-06-03T08:15:00-05:30", utc(2024, 6, 3, 13, 45)),
        ("2024-06-03T08:15:00-0530", utc(2024, 6, 3, 13, 45)),
        ("2024-06-03T08:15:00+00:00", utc(2024, 6, 3, 8, 15)),
        ("2024-06-03T00:30:00+02:00", utc(2024, 6, 2, 22, 30)),
        ("2024-06-03T08:15:00.5Z", utc(2024, 6, 3, 8, 15, 0, 500000)),
        ("2024-06-03T08:15:00.123456+01:00", utc(2024, 6, 3, 7, 15, 0, 123456)),
        ("  2024-06-03T08:15:00Z  ", utc(2024, 6, 3, 8, 15)),
        ("2024-06-03t08:15:00z", utc(2024, 6, 3, 8, 15)),
        ("2024-06-03T08:15:00+01", utc(2024, 6, 3, 7, 15)),
        ("2024-06-03T08:15:00-05", utc(2024, 6, 3, 13, 15)),
        ("2024-06-03T08:15+01", utc(2024, 6, 3, 7, 15)),
        ("2024-06-03T08:15:00.5+01", utc(2024, 6, 3, 7, 15, 0, 500000)),
        ("2024-06-03T08:15:00,5Z", utc(2024, 6, 3, 8, 15, 0, 500000)),
    ],
)
def test_accepted_forms_in_utc(text: str, expected: datetime) -> None:
    assert parse([text]).to_list() == [expected]


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "   ",
        "garbage",
        "2024-06-03",
        "08:15:00",
        "2024-02-30T00:00:00",
        "2024-06-03T25:00:00",
        "2024-13-01T00:00:00",
        "03/06/2024 08:15",
        "2024-06-03T08:15:00+01:00junk",
        "2024-06-03T08:15:00+1",
        "2024-06-03-01",
    ],
)
@pytest.mark.parametrize("timezone", ["UTC", "Europe/Berlin"])
def test_unparseable_is_null(text: str | None, timezone: str) -> None:
    assert parse([text], timezone).to_list() == [None]


@pytest.mark.parametrize(
    ("text", "timezone", "expected"),
    [
        # No offset: local time in the configured zone.
        ("2024-06-03T08:15:00", "Europe/Berlin", utc(2024, 6, 3, 6, 15)),  # CEST +2
        ("2024-01-15 08:15:00", "Europe/Berlin", utc(2024, 1, 15, 7, 15)),  # CET +1
        ("2024-06-03T08:15:00", "America/New_York", utc(2024, 6, 3, 12, 15)),  # EDT -4
        # An explicit offset or Z wins over the configured zone.
        ("2024-06-03T08:15:00Z", "Europe/Berlin", utc(2024, 6, 3, 8, 15)),
        ("2024-06-03T08:15:00+01:00", "Europe/Berlin", utc(2024, 6, 3, 7, 15)),
        ("2024-06-03T08:15:00-0400", "Europe/Berlin", utc(2024, 6, 3, 12, 15)),
        # Spring-forward gap: the local time does not exist.
        ("2024-03-31T02:30:00", "Europe/Berlin", None),
        ("2024-03-31T02:00:00", "Europe/Berlin", None),
        ("2024-03-10T02:30:00", "America/New_York", None),
        # Just around the gap.
        ("2024-03-31T01:59:00", "Europe/Berlin", utc(2024, 3, 31, 0, 59)),
        ("2024-03-31T03:00:00", "Europe/Berlin", utc(2024, 3, 31, 1, 0)),
        # The gap is only a gap in that zone.
        ("2024-03-31T02:30:00", "UTC", utc(2024, 3, 31, 2, 30)),
        ("2024-03-31T02:30:00+01:00", "Europe/Berlin", utc(2024, 3, 31, 1, 30)),
        # Fall-back hour: ambiguous, the earlier instant (still summer time).
        ("2024-10-27T02:30:00", "Europe/Berlin", utc(2024, 10, 27, 0, 30)),
        ("2024-10-27T02:00:00", "Europe/Berlin", utc(2024, 10, 27, 0, 0)),
        ("2024-11-03T01:30:00", "America/New_York", utc(2024, 11, 3, 5, 30)),
        # After the ambiguous hour: standard time.
        ("2024-10-27T03:00:00", "Europe/Berlin", utc(2024, 10, 27, 2, 0)),
    ],
)
def test_configured_zone_and_dst(text: str, timezone: str, expected: datetime | None) -> None:
    assert parse([text], timezone).to_list() == [expected]


def test_result_dtype_is_utc_microseconds() -> None:
    result = parse(["2024-06-03T08:15:00+01:00", "2024-06-03 08:15", None], "Europe/Berlin")
    assert result.dtype == pl.Datetime("us", "UTC")
    assert result.to_list() == [utc(2024, 6, 3, 7, 15), utc(2024, 6, 3, 6, 15), None]


def test_mixed_column_parses_row_by_row() -> None:
    texts = ["2024-06-03T08:00:00Z", "2024-06-03T09:00:00+01:00", "2024-06-03 08:00", "nope"]
    assert parse(texts).to_list() == [utc(2024, 6, 3, 8), utc(2024, 6, 3, 8), utc(2024, 6, 3, 8), None]


def test_accepts_an_expression() -> None:
    frame = pl.DataFrame({"t": ["2024-06-03T08:00:00Z"]})
    out = frame.select(ts=parse_timestamp(pl.col("t"), "UTC")).get_column("ts").to_list()
    assert out == [utc(2024, 6, 3, 8)]


@pytest.mark.parametrize(
    ("instant", "expected"),
    [
        (utc(2024, 6, 3, 0, 0), date(2024, 6, 3)),
        (utc(2024, 6, 3, 23, 59, 59, 999999), date(2024, 6, 3)),
        (utc(2024, 6, 4, 0, 0), date(2024, 6, 4)),
        (None, None),
    ],
)
def test_utc_day(instant: datetime | None, expected: date | None) -> None:
    frame = pl.DataFrame({"ts": [instant]}, schema={"ts": pl.Datetime("us", "UTC")})
    assert frame.select(d=utc_day(pl.col("ts"))).get_column("d").to_list() == [expected]
