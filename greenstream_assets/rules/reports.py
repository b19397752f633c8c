"""Report rules: the day's system-wide peak of total demand, missing and anomalous readings excluded."""

from __future__ import annotations

from datetime import date

import polars as pl

DAILY_PEAK_SCHEMA = {
    "reading_date": pl.Date,
    "peak_ts": pl.Datetime("us", "UTC"),
    "peak_kw": pl.Float64,
    "meters_reporting": pl.UInt32,
}


def peak_eligible() -> pl.Expr:
    """Readings that may enter any peak: an actual value that is not an anomaly."""
    return ~pl.col("is_missing") & ~pl.col("is_anomaly") & pl.col("energy_kw").is_not_null()


def system_peak(readings: pl.DataFrame | pl.LazyFrame, day: date) -> pl.DataFrame:
    """One row: the instant with the highest total kW across meters (earliest on a tie).

    ``meters_reporting`` counts the meters whose readings make that total. A day without eligible
    readings gives a row with null peak and zero meters. ``readings`` may be a lazy scan: the
    totals then read no meter id, and the count reads those of the peak instant only.
    """
    eligible = readings.lazy().filter(peak_eligible())
    totals = (
        eligible.group_by("reading_ts")
        # Rounded to the microwatt so the float sum does not depend on row order.
        .agg(peak_kw=pl.col("energy_kw").sum().round(6))
        .sort(["peak_kw", "reading_ts"], descending=[True, False])
        .head(1)
        .collect()
    )
    if totals.height == 0:
        return pl.DataFrame(
            {"reading_date": [day], "peak_ts": [None], "peak_kw": [None], "meters_reporting": [0]},
            schema=DAILY_PEAK_SCHEMA,
        )
    # The meters of the peak instant only: counting distinct meters in every instant's group hashed
    # all 4.8M meter ids of a day to keep one count (and, from the archive, decoded them all).
    meters = (
        eligible.filter(pl.col("reading_ts") == totals.item(0, "reading_ts"))
        .select(pl.col("meter_id").n_unique())
        .collect()
        .item()
    )
    return totals.select(
        reading_date=pl.lit(day),
        peak_ts="reading_ts",
        peak_kw="peak_kw",
        meters_reporting=pl.lit(meters),
    ).cast(DAILY_PEAK_SCHEMA)


def instant_totals(readings: pl.DataFrame) -> pl.DataFrame:
    """Per instant of ``readings``: the eligible readings' total kW and how many there are.

    For a day read a slice of meters at a time: slices hold disjoint meters, so the slices' totals
    add up to the day's (``peak_of_totals``). A reading is one meter's where ``(meter_id,
    reading_ts)`` is unique, as the table's schema check asserts: a caller takes these totals for
    ``system_peak``'s only when that check passed (counting distinct ids hashed every id)."""
    return (
        readings.lazy()
        .filter(peak_eligible())
        .group_by("reading_ts")
        .agg(peak_kw=pl.col("energy_kw").sum(), meters_reporting=pl.len())
        .collect()
    )


def peak_of_totals(totals: list[pl.DataFrame], day: date) -> pl.DataFrame:
    """``system_peak`` of a day from the ``instant_totals`` of its slices of meters."""
    whole = (
        pl.concat(totals)
        .group_by("reading_ts")
        .agg(
            # Rounded to the microwatt, as system_peak's, so the sum does not depend on the order.
            peak_kw=pl.col("peak_kw").sum().round(6),
            meters_reporting=pl.col("meters_reporting").sum(),
        )
        .sort(["peak_kw", "reading_ts"], descending=[True, False])
        .head(1)
    )
    if whole.height == 0:
        return pl.DataFrame(
            {"reading_date": [day], "peak_ts": [None], "peak_kw": [None], "meters_reporting": [0]},
            schema=DAILY_PEAK_SCHEMA,
        )
    return whole.select(
        reading_date=pl.lit(day),
        peak_ts="reading_ts",
        peak_kw="peak_kw",
        meters_reporting="meters_reporting",
    ).cast(DAILY_PEAK_SCHEMA)
