"""Drift check: warn when a day's anomaly or invalid-row rate jumps above its recent normal.

Rates are per row received: ``anomalies / rows_in`` and ``invalid_rows / rows_in``. A rate drifts
when it exceeds ``drift_factor`` x its median over the ``drift_window_days`` days before the day
(days without rows have no rate and are left out of the median). Against a zero median any rate
above zero exceeds it, as the rule says; an operator who finds a single bad row after quiet weeks
too loud sets ``min_drift_rate``, and against a zero median a rate then drifts only when it is
above zero and at least that (the ``threshold`` column shows it). Without any
earlier day in the window there is no normal to compare with: nothing drifts, the median and
threshold are null.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import polars as pl

from greenstream_assets.rules.config import RulesConfig

# Rule name -> the count column its rate divides by rows_in.
RATE_RULES: dict[str, str] = {"anomaly_rate": "anomalies", "invalid_rate": "invalid_rows"}
DRIFT_SCHEMA = {
    "rule": pl.String,
    "today_rate": pl.Float64,
    "trailing_median": pl.Float64,
    "threshold": pl.Float64,
    "drifted": pl.Boolean,
    "days_in_window": pl.UInt32,
}
DAY_STATS_SCHEMA = {
    "reading_date": pl.Date,
    "rows_in": pl.Int64,
    "anomalies": pl.Int64,
    "invalid_rows": pl.Int64,
}


def _rate(count_column: str) -> pl.Expr:
    rows_in = pl.col("rows_in")
    return pl.when(rows_in > 0).then(pl.col(count_column) / rows_in)


def drift_findings(
    history: pl.DataFrame, today: pl.DataFrame | dict[str, Any], config: RulesConfig = RulesConfig()
) -> pl.DataFrame:
    """One row per rule in ``RATE_RULES``, columns as in ``DRIFT_SCHEMA``.

    ``history``: one row per earlier day (``reading_date``, ``rows_in``, ``anomalies``,
    ``invalid_rows``); rows outside the window before today, today included, are ignored.
    ``today``: the same columns for the day checked, as a dict or a one-row frame.
    """
    today_frame = (pl.DataFrame([today], schema=DAY_STATS_SCHEMA) if isinstance(today, dict) else today).cast(
        DAY_STATS_SCHEMA
    )
    day: date = today_frame.get_column("reading_date")[0]
    window = history.cast(DAY_STATS_SCHEMA).filter(
        pl.col("reading_date").is_between(day - timedelta(days=config.drift_window_days), day, closed="left")
    )
    findings = []
    for rule, count_column in RATE_RULES.items():
        trailing = window.select(
            trailing_median=_rate(count_column).median(), days_in_window=_rate(count_column).count()
        )
        findings.append(
            today_frame.select(rule=pl.lit(rule), today_rate=_rate(count_column)).hstack(trailing)
        )
    median = pl.col("trailing_median")
    rate = pl.col("today_rate")
    threshold = (
        pl.when(median > 0).then(median * config.drift_factor).when(median == 0).then(config.min_drift_rate)
    )
    drifted = (
        pl.when(median > 0)
        .then(rate > pl.col("threshold"))
        .when(median == 0)
        .then((rate > 0) & (rate >= pl.col("threshold")))
        .otherwise(False)
        .fill_null(False)
    )
    return (
        pl.concat(findings)
        .with_columns(threshold=threshold)
        .with_columns(drifted=drifted)
        .select(*DRIFT_SCHEMA)
        .cast(DRIFT_SCHEMA)
    )
