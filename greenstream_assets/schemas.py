"""Pandera contracts, one per layer: what the raw, cleansed and table rows must look like.

They are evaluated as Dagster asset checks (see defs/checks.py), on collected frames with
``lazy=True`` so that every failure is counted, not just the first.
"""

from __future__ import annotations

import functools
import operator

import pandera.polars as pa
import polars as pl

from greenstream_assets.rules.duplicates import repeated_values

UTC_TS = pl.Datetime(time_unit="us", time_zone="UTC")
UNIQUE = "multiple_fields_uniqueness"


def unique_keys(frame: pl.LazyFrame, columns: list[str]) -> pl.LazyFrame:
    """Per row: no other row has the same ``columns`` (nulls equal), as pandera's ``unique``.

    A 64-bit hash per key settles the usual case exactly, in a quarter of the time of comparing
    keys: when no two rows' hashes meet, no two keys do. Only then are the keys compared.
    """
    keys = frame.select(columns).collect()
    hashed = functools.reduce(
        operator.xor, (pl.col(name).hash(seed=20240304 + i) for i, name in enumerate(columns))
    )
    if len(repeated_values(keys.select(hashed).to_series())) == 0:
        return pl.LazyFrame({UNIQUE: pl.repeat(True, keys.height, eager=True)})
    return pl.LazyFrame({UNIQUE: ~keys.is_duplicated()})


class RawReadings(pa.DataFrameModel):
    """Rows as sent: text columns, each traced to its file and line."""

    meter_id: str = pa.Field(nullable=True)
    timestamp: str = pa.Field(nullable=True)
    energy_value: str = pa.Field(nullable=True)
    energy_unit: str = pa.Field(nullable=True)
    source_file: str = pa.Field(nullable=False, str_length={"min_value": 1})
    line_number: pl.Int64 = pa.Field(ge=2)

    @pa.dataframe_check(name=UNIQUE)
    def one_row_per_file_line(cls, data) -> pl.LazyFrame:
        """A file's line is read once: (source_file, line_number) is unique."""
        return unique_keys(data.lazyframe, ["source_file", "line_number"])

    class Config:
        strict = True


class CleansedReadings(pa.DataFrameModel):
    """Readings that passed rules 1-4: one per meter and instant, in kW, never negative."""

    meter_id: str = pa.Field(str_length={"min_value": 1})
    reading_ts: UTC_TS = pa.Field()
    energy_kw: float = pa.Field(ge=0, nullable=True)
    is_missing: bool = pa.Field()
    source_file: str = pa.Field()
    line_number: pl.Int64 = pa.Field(ge=2)

    @pa.dataframe_check
    def missing_means_no_value(cls, data) -> pl.LazyFrame:
        """is_missing is true exactly where energy_kw is NULL."""
        return data.lazyframe.select(pl.col("energy_kw").is_null() == pl.col("is_missing"))

    @pa.dataframe_check(name=UNIQUE)
    def one_reading_per_meter_and_instant(cls, data) -> pl.LazyFrame:
        """(meter_id, reading_ts) is unique: duplicates were collapsed or quarantined."""
        return unique_keys(data.lazyframe, ["meter_id", "reading_ts"])


class MeterReadingsTable(CleansedReadings):
    """The warehouse table ``meter_readings`` for one day, as analysts query it."""

    reading_date: pl.Date = pa.Field()
    local_date: pl.Date = pa.Field()
    local_hour: pl.Int8 = pa.Field(ge=0, le=23)
    is_anomaly: bool = pa.Field()
    is_faulty: bool = pa.Field()
    is_peak_period: bool = pa.Field()

    @pa.dataframe_check
    def reading_on_its_day(cls, data) -> pl.LazyFrame:
        """A reading is stored under the UTC day of its own timestamp."""
        return data.lazyframe.select(pl.col("reading_ts").dt.date() == pl.col("reading_date"))

    @pa.dataframe_check
    def flags_only_on_values(cls, data) -> pl.LazyFrame:
        """A missing reading is never an anomaly nor part of a faulty run."""
        return data.lazyframe.select(~(pl.col("is_missing") & (pl.col("is_anomaly") | pl.col("is_faulty"))))
