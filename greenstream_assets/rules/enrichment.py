"""Enrichment: local date and hour in the utility's zone, and the peak-period flag."""

from __future__ import annotations

import polars as pl

from greenstream_assets.rules.config import RulesConfig


def enrichment_columns(config: RulesConfig) -> list[pl.Expr]:
    local = pl.col("reading_ts").dt.convert_time_zone(config.timezone)
    hour = local.dt.hour()
    return [
        local.dt.date().alias("local_date"),
        hour.cast(pl.Int8).alias("local_hour"),
        (
            (hour >= config.peak_start_hour)
            & (hour < config.peak_end_hour)
            & local.dt.weekday().is_in(config.peak_weekdays)
        ).alias("is_peak_period"),
    ]
