"""Enrichment: local date and hour in the utility's zone, and the weekday peak-period flag."""

from __future__ import annotations

from datetime import date, datetime

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from greenstream_assets.rules import enrichment
from greenstream_assets.rules.config import RulesConfig
from greenstream_assets.rules.enrichment import enrichment_columns
from greenstream_assets.rules.flagging import flag_readings

from .helpers import cleansed_frame, utc


def enrich(instants: list[datetime], timezone: str) -> pl.DataFrame:
    frame = pl.DataFrame({"reading_ts": instants}, schema={"reading_ts": pl.Datetime("us", "UTC")})
    return frame.with_columns(enrichment_columns(RulesConfig(timezone=timezone))).drop("reading_ts")


def expected(rows: list[tuple[date, int, bool]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={"local_date": pl.Date, "local_hour": pl.Int8, "is_peak_period": pl.Boolean},
        orient="row",
    )


@pytest.mark.parametrize(
    ("instant", "timezone", "local_date", "local_hour", "is_peak"),
    [
        # 2024-06-03 is a Monday. UTC boundaries of [17, 21).
        (utc(2024, 6, 3, 16, 59), "UTC", date(2024, 6, 3), 16, False),
        (utc(2024, 6, 3, 17, 0), "UTC", date(2024, 6, 3), 17, True),
        (utc(2024, 6, 3, 20, 59), "UTC", date(2024, 6, 3), 20, True),
        (utc(2024, 6, 3, 20, 59, 59, 999999), "UTC", date(2024, 6, 3), 20, True),
        (utc(2024, 6, 3, 21, 0), "UTC", date(2024, 6, 3), 21, False),
        (utc(2024, 6, 3, 0, 0), "UTC", date(2024, 6, 3), 0, False),
        # Weekdays and weekend.
        (utc(2024, 6, 7, 18, 0), "UTC", date(2024, 6, 7), 18, True),  # Friday
        (utc(2024, 6, 8, 18, 0), "UTC", date(2024, 6, 8), 18, False),  # Saturday
        (utc(2024, 6, 9, 18, 0), "UTC", date(2024, 6, 9), 18, False),  # Sunday
        (utc(2024, 6, 5, 19, 30), "UTC", date(2024, 6, 5), 19, True),  # Wednesday
        # Europe/Berlin in summer (UTC+2).
        (utc(2024, 6, 3, 14, 59), "Europe/Berlin", date(2024, 6, 3), 16, False),
        (utc(2024, 6, 3, 15, 0), "Europe/Berlin", date(2024, 6, 3), 17, True),
        (utc(2024, 6, 3, 18, 59), "Europe/Berlin", date(2024, 6, 3), 20, True),
        (utc(2024, 6, 3, 19, 0), "Europe/Berlin", date(2024, 6, 3), 21, False),
        (utc(2024, 6, 3, 17, 0), "Europe/Berlin", date(2024, 6, 3), 19, True),
        # Europe/Berlin in winter (UTC+1); 2024-01-15 is a Monday.
        (utc(2024, 1, 15, 15, 59), "Europe/Berlin", date(2024, 1, 15), 16, False),
        (utc(2024, 1, 15, 16, 0), "Europe/Berlin", date(2024, 1, 15), 17, True),
        (utc(2024, 1, 15, 19, 59), "Europe/Berlin", date(2024, 1, 15), 20, True),
        (utc(2024, 1, 15, 20, 0), "Europe/Berlin", date(2024, 1, 15), 21, False),
        # Local date differs from the UTC date.
        (utc(2024, 6, 2, 22, 30), "Europe/Berlin", date(2024, 6, 3), 0, False),  # Sun UTC, Mon local
        (utc(2024, 6, 8, 15, 30), "Europe/Berlin", date(2024, 6, 8), 17, False),  # Saturday local
        # The weekday is the local one: Saturday 00:30 UTC is Friday 17:30 in Los Angeles.
        (utc(2024, 6, 8, 0, 30), "America/Los_Angeles", date(2024, 6, 7), 17, True),
        # Monday 00:30 UTC is Sunday 17:30 in Los Angeles.
        (utc(2024, 6, 3, 0, 30), "America/Los_Angeles", date(2024, 6, 2), 17, False),
        # DST switch day in Berlin: 2024-03-31 01:00 UTC is 03:00 CEST (a Sunday).
        (utc(2024, 3, 31, 1, 0), "Europe/Berlin", date(2024, 3, 31), 3, False),
        (utc(2024, 10, 28, 16, 0), "Europe/Berlin", date(2024, 10, 28), 17, True),  # Monday after fall-back
    ],
)
def test_enrichment(
    instant: datetime, timezone: str, local_date: date, local_hour: int, is_peak: bool
) -> None:
    assert_frame_equal(enrich([instant], timezone), expected([(local_date, local_hour, is_peak)]))


def test_column_names_and_dtypes() -> None:
    out = enrich([utc(2024, 6, 3, 17)], "UTC")
    assert out.schema == pl.Schema(
        {"local_date": pl.Date, "local_hour": pl.Int8, "is_peak_period": pl.Boolean}
    )


def test_peak_hours_and_weekdays_are_configurable() -> None:
    config = RulesConfig(peak_start_hour=7, peak_end_hour=9, peak_weekdays=(6, 7))
    frame = pl.DataFrame(
        {"reading_ts": [utc(2024, 6, 8, 7), utc(2024, 6, 8, 9), utc(2024, 6, 3, 8), utc(2024, 6, 9, 8, 59)]},
        schema={"reading_ts": pl.Datetime("us", "UTC")},
    )
    flags = frame.select(enrichment_columns(config)).get_column("is_peak_period").to_list()
    assert flags == [True, False, False, True]


@pytest.mark.parametrize("timezone", ["UTC", "Europe/Berlin", "Asia/Kolkata"])
def test_enrich_per_instant_equals_per_row(timezone: str) -> None:
    # Repeated instants in any order, a null, and Berlin's fall-back and spring-forward hours.
    instants = [
        utc(2024, 10, 27, 1, 15),
        utc(2024, 10, 27, 0, 15),
        utc(2024, 3, 31, 1, 0),
        None,
        utc(2024, 10, 27, 1, 15),
        utc(2024, 6, 3, 16, 0),
        utc(2024, 6, 3, 16, 0),
        utc(2024, 3, 30, 23, 0),
    ]
    frame = pl.DataFrame(
        {"meter_id": [f"m{i}" for i in range(len(instants))], "reading_ts": instants},
        schema={"meter_id": pl.String, "reading_ts": pl.Datetime("us", "UTC")},
    )
    config = RulesConfig(timezone=timezone)
    enriched = enrichment.enrich(frame, config)
    assert_frame_equal(enriched, frame.with_columns(enrichment_columns(config)))
    assert enriched.get_column("meter_id").to_list() == frame.get_column("meter_id").to_list()


def test_flag_readings_adds_every_flag() -> None:
    cleansed = cleansed_frame(
        [
            ("m1", utc(2024, 6, 3, 15, 0), 2.0, False, "f.csv", 2),
            ("m1", utc(2024, 6, 3, 15, 15), 100.0, False, "f.csv", 3),
            ("m1", utc(2024, 6, 3, 15, 30), 100.5, False, "f.csv", 4),
            ("m1", utc(2024, 6, 3, 19, 0), None, True, "f.csv", 5),
        ]
    )
    flagged, periods = flag_readings(cleansed, RulesConfig(timezone="Europe/Berlin"))
    assert flagged.columns == [
        *cleansed.columns,
        "is_anomaly",
        "is_faulty",
        "local_date",
        "local_hour",
        "is_peak_period",
    ]
    assert_frame_equal(flagged.select(cleansed.columns), cleansed)
    assert flagged.select("is_anomaly", "is_faulty", "local_hour", "is_peak_period").rows() == [
        (False, False, 17, True),
        (False, False, 17, True),
        (True, False, 17, True),
        (False, False, 21, False),
    ]
    assert periods.height == 0
