"""Rule 5: meters stuck at or near zero for a continuous period are faulty.

A period is a run of a meter's consecutive readings (by time, missing values skipped) that are all
at or below ``near_zero_kw``; it is faulty when its last reading is at least ``min_zero_hours`` after
its first.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from greenstream_assets.rules.config import RulesConfig

FAULTY_PERIOD_SCHEMA = {
    "meter_id": pl.String,
    "start_ts": pl.Datetime("us", "UTC"),
    "end_ts": pl.Datetime("us", "UTC"),
    "readings": pl.UInt32,
}


def near_zero(config: RulesConfig) -> pl.Expr:
    """A reading that can be part of a stuck period: at or below the threshold, not an anomaly."""
    return (pl.col("energy_kw") <= config.near_zero_kw) & ~pl.col("is_anomaly")


def run_starts(flag: pl.Expr) -> pl.Expr:
    """True where ``flag`` changes or a new meter begins, over rows sorted by meter and time."""
    return ((flag != flag.shift(1)) | (pl.col("meter_id") != pl.col("meter_id").shift(1))).fill_null(True)


def flag_faulty(readings: pl.DataFrame, config: RulesConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return ``readings`` with ``is_faulty`` added, and the faulty periods found in them.

    Expects ``meter_id``, ``reading_ts``, ``energy_kw``, ``is_missing``, ``is_anomaly``; one row per
    meter and instant. Periods: ``meter_id``, ``start_ts``, ``end_ts``, ``readings``.
    """
    near = near_zero(config)
    new_run = run_starts(near)
    sent = (
        readings.with_row_index("_row")
        .filter(~pl.col("is_missing"))
        .select("_row", "meter_id", "reading_ts", "energy_kw", "is_anomaly")
    )
    # Runs are a meter's own: only meters with a reading near zero can have one, and only their
    # readings (a small share of the day) need sorting by meter and time.
    candidates = sent.filter(near).get_column("meter_id").unique()
    zero_rows = (
        sent.filter(pl.col("meter_id").is_in(candidates.implode()))
        .sort("meter_id", "reading_ts")
        .with_columns(near=near, run_id=new_run.cum_sum())
        .filter(pl.col("near"))
    )
    minimum = timedelta(hours=config.min_zero_hours)
    runs = (
        zero_rows.group_by("run_id")
        .agg(
            pl.col("meter_id").first(),
            start_ts=pl.col("reading_ts").min(),
            end_ts=pl.col("reading_ts").max(),
            readings=pl.len(),
        )
        .filter((pl.col("end_ts") - pl.col("start_ts")) >= minimum)
    )
    faulty_rows = zero_rows.join(runs.select("run_id"), on="run_id", how="semi").get_column("_row")
    flags = pl.repeat(False, readings.height, eager=True).alias("is_faulty").scatter(faulty_rows, True)
    periods = runs.select(*FAULTY_PERIOD_SCHEMA).sort("meter_id", "start_ts").cast(FAULTY_PERIOD_SCHEMA)
    return readings.with_columns(flags), periods
