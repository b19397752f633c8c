"""Rules 1-4 applied to one day's raw rows: each row is kept, quarantined with a reason, or collapsed.

Every row that comes in ends in exactly one of ``cleansed``, ``quarantined`` or the collapsed count.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import polars as pl

from greenstream_assets.rules.config import RulesConfig
from greenstream_assets.rules.duplicates import mark_duplicates
from greenstream_assets.rules.timestamps import parse_timestamp_column
from greenstream_assets.rules.units import kw_value, unit_columns, value_columns

# Quarantine reasons, in the order they are tested: a row gets the first that applies.
MISSING_METER_ID = "missing_meter_id"
INVALID_METER_ID = "invalid_meter_id"
INVALID_TIMESTAMP = "invalid_timestamp"
TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
CONFLICTING_DUPLICATE = "conflicting_duplicate"
INVALID_UNIT = "invalid_unit"
INVALID_VALUE = "invalid_value"
NEGATIVE_VALUE = "negative_value"
REASONS = (
    MISSING_METER_ID,
    INVALID_METER_ID,
    INVALID_TIMESTAMP,
    TIMESTAMP_OUT_OF_RANGE,
    CONFLICTING_DUPLICATE,
    INVALID_UNIT,
    INVALID_VALUE,
    NEGATIVE_VALUE,
)

# A meter id with one of these (ASCII control characters) is invalid.
_CONTROL_CHARACTERS = [chr(c) for c in (*range(32), 127)]

RAW_COLUMNS = ("meter_id", "timestamp", "energy_value", "energy_unit")
QUARANTINE_COLUMNS = (*RAW_COLUMNS, "reason", "source_file", "line_number")
CLEANSED_SCHEMA = {
    "meter_id": pl.String,
    "reading_ts": pl.Datetime("us", "UTC"),
    "energy_kw": pl.Float64,
    "is_missing": pl.Boolean,
    "source_file": pl.String,
    "line_number": pl.Int64,
}


@dataclass(frozen=True)
class ValidatedDay:
    cleansed: pl.DataFrame
    quarantined: pl.DataFrame
    collapsed_rows: int
    rows_in: int

    def reason_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(REASONS, 0)
        for reason, n in self.quarantined.group_by("reason").len().iter_rows():
            counts[reason] = n
        return counts


def validate_readings(raw: pl.DataFrame, config: RulesConfig, day: date | None) -> ValidatedDay:
    """Apply the row rules to raw text rows (``RAW_COLUMNS`` + ``source_file``, ``line_number``).

    ``day``: the partition the rows were staged for; a parseable timestamp on another UTC day is
    ``timestamp_out_of_range`` (rows land in a day only for review when their own day is unusable).
    ``None`` accepts any day.
    """
    # A meter id's text without surrounding spaces, once; empty is no id (no character is no byte).
    meter = raw.get_column("meter_id").str.strip_chars()
    value = pl.col("energy_value")
    is_missing, value_num = value_columns(raw.get_column("energy_value"))
    unit, factor = unit_columns(raw.get_column("energy_unit"), config.unit_factors)
    frame = raw.with_row_index("row_order").with_columns(
        is_missing,
        value_num,
        unit,
        factor,
        meter_id_clean=pl.when(meter.str.len_bytes() > 0).then(meter),
        reading_ts=parse_timestamp_column(raw.get_column("timestamp"), config.timezone),
    )
    frame = frame.with_columns(
        # Missing values compare equal to each other; numbers compare as numbers ("1.5" == "1.50");
        # text that is no number compares as text.
        value_text=pl.when(pl.col("is_missing") | pl.col("value_num").is_not_null())
        .then(None)
        .otherwise(value),
        energy_kw=kw_value(pl.col("value_num"), pl.col("factor")),
    )
    ts = pl.col("reading_ts")
    if day is None:
        in_day = ts.is_not_null()
    else:
        # The UTC day as a range of instants: two comparisons instead of a date per row.
        start = datetime.combine(day, time(), UTC)
        in_day = (ts >= start) & (ts < start + timedelta(days=1))
    frame = frame.with_columns(keyed=pl.col("meter_id_clean").is_not_null() & in_day)
    frame = mark_duplicates(frame.rename({"meter_id": "meter_id_raw", "meter_id_clean": "meter_id"}), "keyed")
    # The first reason that applies, as its position in REASONS (a byte per row, not a string):
    # the text is given only to the quarantined rows.
    code = {reason: pl.lit(i, dtype=pl.UInt8) for i, reason in enumerate(REASONS)}
    # Characters are counted only where some id has more bytes than the limit allows characters
    # (a character is at least a byte): an id's byte length is in its string view already.
    longest = meter.str.len_bytes().max()
    too_long = (
        pl.col("meter_id").str.len_chars() > config.max_meter_id_length
        if longest is not None and longest > config.max_meter_id_length
        else pl.lit(False)
    )
    reason = (
        pl.when(pl.col("meter_id").is_null())
        .then(code[MISSING_METER_ID])
        .when(too_long | pl.col("meter_id").str.contains_any(_CONTROL_CHARACTERS))
        .then(code[INVALID_METER_ID])
        .when(ts.is_null())
        .then(code[INVALID_TIMESTAMP])
        .when(~in_day)
        .then(code[TIMESTAMP_OUT_OF_RANGE])
        .when(pl.col("is_conflicting"))
        .then(code[CONFLICTING_DUPLICATE])
        .when(pl.col("factor").is_null())
        .then(code[INVALID_UNIT])
        .when(~pl.col("is_missing") & pl.col("value_num").is_null())
        .then(code[INVALID_VALUE])
        .when(pl.col("energy_kw") < 0)
        .then(code[NEGATIVE_VALUE])
    )
    # One reason column over every row (collapsed copies included, then left out): filtering the
    # collapsed rows first would copy the whole day once more.
    frame = frame.with_columns(reason=reason)
    kept = ~pl.col("is_collapsed")
    # Lazily, so each filter copies only the columns it keeps, not the whole working frame.
    cleansed = (
        frame.lazy()
        .filter(kept & pl.col("reason").is_null())
        .select(
            "meter_id",
            "reading_ts",
            pl.when(pl.col("is_missing")).then(None).otherwise(pl.col("energy_kw")).alias("energy_kw"),
            "is_missing",
            "source_file",
            pl.col("line_number").cast(pl.Int64),
        )
        .collect()
    )
    quarantined = (
        frame.lazy()
        .filter(kept & pl.col("reason").is_not_null())
        .select(
            pl.col("meter_id_raw").alias("meter_id"),
            *RAW_COLUMNS[1:],
            pl.lit(pl.Series(REASONS, dtype=pl.String)).gather(pl.col("reason")).alias("reason"),
            "source_file",
            pl.col("line_number").cast(pl.Int64),
        )
        .collect()
    )
    return ValidatedDay(
        cleansed=cleansed,
        quarantined=quarantined,
        collapsed_rows=int(frame.get_column("is_collapsed").sum()),
        rows_in=raw.height,
    )
