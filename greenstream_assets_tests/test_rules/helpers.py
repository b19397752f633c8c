"""Small builders for the rule tests: raw text rows in, typed frames out."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta

import polars as pl

from greenstream_assets.rules.validation import CLEANSED_SCHEMA

RAW_SCHEMA = {
    "meter_id": pl.String,
    "timestamp": pl.String,
    "energy_value": pl.String,
    "energy_unit": pl.String,
    "source_file": pl.String,
    "line_number": pl.Int64,
}
QUARANTINE_SCHEMA = {
    "meter_id": pl.String,
    "timestamp": pl.String,
    "energy_value": pl.String,
    "energy_unit": pl.String,
    "reason": pl.String,
    "source_file": pl.String,
    "line_number": pl.Int64,
}
READINGS_SCHEMA = {
    "meter_id": pl.String,
    "reading_ts": pl.Datetime("us", "UTC"),
    "energy_kw": pl.Float64,
    "is_missing": pl.Boolean,
    "is_anomaly": pl.Boolean,
}

DAY = date(2024, 6, 3)  # a Monday
SOURCE = "meters.csv"

Row = tuple[str | None, str | None, str | None, str | None]


def raw_frame(rows: Iterable[Row], source_file: str = SOURCE, first_line: int = 2) -> pl.DataFrame:
    """Raw text rows (meter_id, timestamp, energy_value, energy_unit) as read from one file."""
    data = [(*row, source_file, first_line + i) for i, row in enumerate(rows)]
    return pl.DataFrame(data, schema=RAW_SCHEMA, orient="row")


def utc(*args: int) -> datetime:
    """``utc(2024, 6, 3, 8, 15)`` -> an aware UTC datetime."""
    return datetime(*args, tzinfo=UTC)


def cleansed_frame(rows: Sequence[tuple]) -> pl.DataFrame:
    """Expected cleansed rows: (meter_id, reading_ts, energy_kw, is_missing, source_file, line_number)."""
    return pl.DataFrame(list(rows), schema=CLEANSED_SCHEMA, orient="row")


def quarantine_frame(rows: Sequence[tuple]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=QUARANTINE_SCHEMA, orient="row")


def readings_frame(rows: Sequence[tuple]) -> pl.DataFrame:
    """Flagging/report input: (meter_id, reading_ts, energy_kw, is_missing, is_anomaly)."""
    return pl.DataFrame(list(rows), schema=READINGS_SCHEMA, orient="row")


def series_of(
    meter_id: str,
    start: datetime,
    count: int,
    kw: float | None = 0.0,
    step: timedelta = timedelta(minutes=15),
) -> list[tuple]:
    """``count`` readings of one meter every ``step`` from ``start``, all at ``kw`` (None = missing)."""
    return [(meter_id, start + i * step, kw, kw is None, False) for i in range(count)]
