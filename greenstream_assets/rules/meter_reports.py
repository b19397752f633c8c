"""Per-meter daily reports: peak demand and its time, energy in and out of the peak period, load factor.

Which readings count, as a meter data management system reports billing determinants:

- Energy (``energy_kwh``, ``peak_period_kwh``, ``off_peak_kwh``, ``average_kw``) uses actual
  readings that are neither missing nor anomalous, plus VEE-estimated readings when the input
  carries a ``quality_code`` (rows coded ``estimated_*``, valued by ``value_kw``);
  ``estimated_intervals_used`` says how many of ``intervals_used`` were estimated.
- Peak demand uses actual readings only, unless ``include_estimated_in_peak`` is set; the report
  says which in ``peak_includes_estimated``. Missing and anomalous readings never enter a peak.
- Readings of a faulty meter are actual measurements (near zero) and count like any other: the
  faulty flag is reported elsewhere (incidents), and a stuck meter's real consumption is zero.
- ``average_kw`` is the mean demand over the intervals used (energy / hours covered), not over
  24 h: a meter with half a day of data is not reported at half its load. ``load_factor`` is
  ``average_kw / peak_kw``, null when the peak is null or zero; when estimates are in the energy
  but not in the peak it can exceed 1, which itself says the estimates run above the measured peak.
- A meter with no usable interval has a row with null energy, peak and averages and zero counts.
"""

from __future__ import annotations

from datetime import date

import polars as pl

from greenstream_assets.rules.config import RulesConfig
from greenstream_assets.rules.enrichment import enrich
from greenstream_assets.rules.reports import peak_eligible
from greenstream_assets.rules.vee import ACTUAL, ESTIMATED_CODES, FAULTY

METER_DAILY_REPORT_SCHEMA = {
    "reading_date": pl.Date,
    "meter_id": pl.String,
    "peak_kw": pl.Float64,
    "peak_ts": pl.Datetime("us", "UTC"),
    "energy_kwh": pl.Float64,
    "peak_period_kwh": pl.Float64,
    "off_peak_kwh": pl.Float64,
    "average_kw": pl.Float64,
    "load_factor": pl.Float64,
    "intervals_used": pl.UInt32,
    "estimated_intervals_used": pl.UInt32,
    "peak_includes_estimated": pl.Boolean,
}

# Sums of floats are rounded to the microwatt (hour) so they do not depend on row order.
_DECIMALS = 6


def _usage(readings: pl.DataFrame, config: RulesConfig) -> pl.DataFrame:
    """The readings with ``_kw`` (the value to use), ``_actual``, ``_estimated`` and ``is_peak_period``."""
    if "is_peak_period" not in readings.columns:
        readings = enrich(readings, config)
    if "quality_code" not in readings.columns:
        return readings.with_columns(
            _kw=pl.col("energy_kw"), _actual=peak_eligible(), _estimated=pl.lit(False)
        )
    kw = pl.col("value_kw" if "value_kw" in readings.columns else "energy_kw")
    code = pl.col("quality_code")
    return readings.with_columns(
        _kw=kw,
        _actual=code.is_in([ACTUAL, FAULTY]) & kw.is_not_null(),
        _estimated=code.is_in(ESTIMATED_CODES) & kw.is_not_null(),
    )


def meter_daily_report(
    readings: pl.DataFrame, config: RulesConfig, day: date, *, include_estimated_in_peak: bool = False
) -> pl.DataFrame:
    """One row per meter in ``readings`` (the day's flagged readings, or VEE's estimated grid).

    Expects ``meter_id``, ``reading_ts``, ``energy_kw`` and either ``is_missing``/``is_anomaly`` or
    ``quality_code`` (+ ``value_kw``); ``is_peak_period`` is derived from ``config`` when absent.
    Columns as in ``METER_DAILY_REPORT_SCHEMA``; ``peak_ts`` is the earliest instant on a tie.
    """
    hours = config.interval_minutes / 60
    used = pl.col("_actual") | pl.col("_estimated")
    in_peak = (pl.col("_actual") | pl.col("_estimated")) if include_estimated_in_peak else pl.col("_actual")
    kw = pl.col("_kw")
    intervals = used.sum()
    per_meter = (
        _usage(readings, config)
        .with_columns(_peak_kw=pl.when(in_peak).then(kw))
        .group_by("meter_id")
        .agg(
            peak_kw=pl.col("_peak_kw").max(),
            peak_ts=pl.col("reading_ts")
            .sort_by(["_peak_kw", "reading_ts"], descending=[True, False], nulls_last=True)
            .first(),
            energy_kwh=pl.when(used).then(kw).sum() * hours,
            peak_period_kwh=pl.when(used & pl.col("is_peak_period")).then(kw).sum() * hours,
            off_peak_kwh=pl.when(used & ~pl.col("is_peak_period")).then(kw).sum() * hours,
            average_kw=pl.when(used).then(kw).sum() / intervals,
            intervals_used=intervals,
            estimated_intervals_used=(used & pl.col("_estimated")).sum(),
        )
    )
    has_data = pl.col("intervals_used") > 0
    return (
        per_meter.select(
            reading_date=pl.lit(day),
            meter_id="meter_id",
            peak_kw="peak_kw",
            peak_ts=pl.when(pl.col("peak_kw").is_not_null()).then("peak_ts"),
            **{
                name: pl.when(has_data).then(pl.col(name).round(_DECIMALS))
                for name in ("energy_kwh", "peak_period_kwh", "off_peak_kwh", "average_kw")
            },
            load_factor=pl.when(pl.col("peak_kw") > 0)
            .then(pl.col("average_kw") / pl.col("peak_kw"))
            .round(_DECIMALS),
            intervals_used="intervals_used",
            estimated_intervals_used="estimated_intervals_used",
            peak_includes_estimated=pl.lit(include_estimated_in_peak),
        )
        .sort("meter_id")
        .cast(METER_DAILY_REPORT_SCHEMA)
    )


def top_meters(report: pl.DataFrame, n: int) -> pl.DataFrame:
    """The ``n`` meters of ``report`` with the highest ``peak_kw`` (ties by ``meter_id``).

    Meters without a peak are not ranked. ``n`` is usually ``config.top_n_meters``.
    """
    return (
        report.filter(pl.col("peak_kw").is_not_null())
        .sort(["peak_kw", "meter_id"], descending=[True, False])
        .head(n)
    )
