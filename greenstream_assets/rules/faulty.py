"""Rule 5: meters stuck at or near zero for a continuous period are faulty.

A period is a run of a meter's consecutive readings (by time, missing values skipped) that are all
at or below ``near_zero_kw``; it is faulty when its last reading is at least ``min_zero_hours`` after
its first. A run that began the day before (its readings given as ``earlier``) goes on across
midnight: the day's readings in it are faulty when the whole run is long enough.
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


def flag_faulty(
    readings: pl.DataFrame, config: RulesConfig, earlier: pl.DataFrame | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return ``readings`` with ``is_faulty`` added, and the faulty periods found in them.

    Expects ``meter_id``, ``reading_ts``, ``energy_kw``, ``is_missing``, ``is_anomaly``; one row per
    meter and instant. Periods: ``meter_id``, ``start_ts``, ``end_ts``, ``readings``.

    ``earlier``: the same columns for readings before these (the previous day's, of the meters that
    may have been stuck at its end). A run they continue counts from its first reading there, and is
    reported when it holds a reading of ``readings``; their own flags are not changed here.
    """
    near = near_zero(config)
    new_run = run_starts(near)
    columns = ["_row", "meter_id", "reading_ts", "energy_kw", "is_anomaly"]
    sent = readings.with_row_index("_row").filter(~pl.col("is_missing")).select(columns)
    # Runs are a meter's own: only meters with a reading near zero can have one, and only their
    # readings (a small share of the day) need sorting by meter and time.
    candidates = sent.filter(near).get_column("meter_id").unique()
    pool = sent.filter(pl.col("meter_id").is_in(candidates.implode()))
    if earlier is not None and earlier.height and candidates.len():
        before = (
            earlier.filter(~pl.col("is_missing") & pl.col("meter_id").is_in(candidates.implode()))
            .with_columns(_row=pl.lit(None, dtype=pool.schema["_row"]))
            .select(columns)
            .cast(pool.schema)
        )
        pool = pl.concat([before, pool])
    zero_rows = (
        pool.sort("meter_id", "reading_ts")
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
            today=pl.col("_row").is_not_null().any(),
        )
        # A run of the earlier readings alone was theirs to report.
        .filter(((pl.col("end_ts") - pl.col("start_ts")) >= minimum) & pl.col("today"))
    )
    faulty_rows = (
        zero_rows.join(runs.select("run_id"), on="run_id", how="semi").get_column("_row").drop_nulls()
    )
    flags = pl.repeat(False, readings.height, eager=True).alias("is_faulty").scatter(faulty_rows, True)
    periods = runs.select(*FAULTY_PERIOD_SCHEMA).sort("meter_id", "start_ts").cast(FAULTY_PERIOD_SCHEMA)
    return readings.with_columns(flags), periods
