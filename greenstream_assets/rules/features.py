"""An hourly per-meter feature table built from VEE's estimated grid, for forecasting and analytics.

Schema (``HOURLY_FEATURES_SCHEMA``), one row per meter and local clock hour:

======================== ============ =============================================================
column                   type         meaning
======================== ============ =============================================================
meter_id                 String       the meter
hour_start_utc           Datetime UTC the instant the local hour starts (both fall-back hours are rows)
local_date               Date         local calendar day in ``config.timezone``
local_hour               Int8         local clock hour, 0-23
weekday                  Int8         ISO weekday of ``local_date``, 1 = Monday ... 7 = Sunday
is_weekend               Boolean      weekday is 6 or 7
is_holiday               Boolean      ``local_date`` is in ``config.holidays``
kwh                      Float64      energy of the usable intervals: sum of ``value_kw`` x interval
                                      hours; null when no interval is usable
peak_kw                  Float64      highest ``value_kw`` of the usable intervals; null when none
estimated_share          Float64      share of the hour's intervals that are estimated (0-1)
missing_share            Float64      share of the hour's intervals not usable: missing or anomaly
prev_day_same_hour_kwh   Float64      ``kwh`` at the same local hour of the previous local day
prev_week_same_hour_kwh  Float64      ``kwh`` at the same local hour seven local days earlier
======================== ============ =============================================================

Usable intervals are actual, faulty (a stuck meter's real reading) and estimated ones. Anomalies
are excluded from ``kwh`` and ``peak_kw`` and count as missing: an out-of-range value is not
consumption. ``kwh`` of an hour with missing intervals is the energy of the intervals present,
not scaled up; ``missing_share`` says how much is absent, so a model can drop or weight the hour.
The previous day's and week's values are looked up by local date and hour (in ``history_hourly``
or the rows being built); they are null where that hour is absent, e.g. the hour skipped on a
spring-forward day. On a fall-back day the repeated hour is looked up as the mean of its two rows.
"""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

from greenstream_assets.rules.config import RulesConfig
from greenstream_assets.rules.vee import ACTUAL, ESTIMATED_CODES, FAULTY, local_day_bounds

HOURLY_FEATURES_SCHEMA = {
    "meter_id": pl.String,
    "hour_start_utc": pl.Datetime("us", "UTC"),
    "local_date": pl.Date,
    "local_hour": pl.Int8,
    "weekday": pl.Int8,
    "is_weekend": pl.Boolean,
    "is_holiday": pl.Boolean,
    "kwh": pl.Float64,
    "peak_kw": pl.Float64,
    "estimated_share": pl.Float64,
    "missing_share": pl.Float64,
    "prev_day_same_hour_kwh": pl.Float64,
    "prev_week_same_hour_kwh": pl.Float64,
}
USABLE_CODES = (ACTUAL, FAULTY, *ESTIMATED_CODES)
_HOUR_KEY = ("meter_id", "local_date", "local_hour")
# What hourly_features reads of earlier days' output.
HISTORY_COLUMNS = (*_HOUR_KEY, "kwh")
# kWh rounded to the microwatt-hour so the sum does not depend on row order.
_DECIMALS = 6


def _same_hour_kwh(
    hourly: pl.DataFrame,
    history_hourly: pl.DataFrame | None,
    timezone: str,
    built: list[date],
    wanted: list[date],
) -> pl.DataFrame:
    """kWh per meter, local date and local hour for the local dates ``wanted``; the rows being
    built (of the local dates ``built``) win over history for their dates."""
    lookup = hourly.select(*_HOUR_KEY, "kwh").filter(pl.col("local_date").is_in(wanted))
    if history_hourly is not None:
        older = (
            history_hourly.select(*_HOUR_KEY, "kwh")
            .cast({"meter_id": pl.String, "local_date": pl.Date, "local_hour": pl.Int8, "kwh": pl.Float64})
            .filter(pl.col("local_date").is_in(wanted))
        )
        # History of other dates than those being built (the usual case) needs no join.
        if older.select(pl.col("local_date").is_in(built).any()).item():
            older = older.join(
                hourly.select("meter_id", "local_date").unique(), on=["meter_id", "local_date"], how="anti"
            )
        lookup = pl.concat([lookup, older])
    # A local hour holds two hours' rows only on a fall-back day (25 hours long): their mean. On
    # any other day each (meter, date, hour) is one row already.
    if not any(_day_hours(d, timezone) > 24 for d in wanted):
        return lookup
    return lookup.group_by(*_HOUR_KEY).agg(pl.col("kwh").mean())


def _in_meter_time_order(frame: pl.DataFrame) -> bool:
    """Whether ``frame`` is sorted by meter_id, then reading_ts."""
    meter, ts = pl.col("meter_id"), pl.col("reading_ts")
    backwards = (meter < meter.shift()) | ((meter == meter.shift()) & (ts < ts.shift()))
    return not frame.select(backwards.any()).item()


def _day_hours(local_day: date, timezone: str) -> float:
    start, end = local_day_bounds(local_day, timezone)
    return (end - start) / timedelta(hours=1)


def _local_hours(instants: pl.Series, timezone: str) -> pl.DataFrame:
    """Per distinct instant: the UTC start of its local hour, its local date and local hour. A day
    of 4.8M readings holds about a hundred instants: the time zone is applied to those only."""
    local = pl.col("reading_ts").dt.convert_time_zone(timezone)
    # The local hour starts this long before the reading; subtracting keeps the instant exact
    # across DST changes, where truncating a local time would be ambiguous.
    into_hour = pl.duration(
        minutes=local.dt.minute(), seconds=local.dt.second(), microseconds=local.dt.microsecond()
    )
    return (
        instants.unique()
        .to_frame("reading_ts")
        .with_columns(
            hour_start_utc=pl.col("reading_ts") - into_hour,
            local_date=local.dt.date(),
            local_hour=local.dt.hour().cast(pl.Int8),
        )
    )


def hourly_features(
    estimated_day: pl.DataFrame, history_hourly: pl.DataFrame | None, config: RulesConfig
) -> pl.DataFrame:
    """Hourly features of ``estimated_day`` (``rules.vee.estimate`` output), as in the module docstring.

    ``history_hourly``: earlier ``hourly_features`` output (at least ``meter_id``, ``local_date``,
    ``local_hour``, ``kwh``) covering the previous week, or None.
    """
    hours = config.interval_minutes / 60
    usable = pl.col("quality_code").is_in(USABLE_CODES) & pl.col("value_kw").is_not_null()
    value = pl.when(usable).then(pl.col("value_kw"))
    framed = estimated_day.join(
        _local_hours(estimated_day.get_column("reading_ts"), config.timezone),
        on="reading_ts",
        how="left",
        maintain_order="left",
    )
    # Per reading first, over whole columns: inside the aggregation they ran per hour group.
    framed = framed.with_columns(
        _usable=usable, _value=value, _estimated=pl.col("quality_code").is_in(ESTIMATED_CODES)
    )
    usable, value = pl.col("_usable"), pl.col("_value")
    per_hour = {
        "kwh": pl.when(usable.any()).then((value.sum() * hours).round(_DECIMALS)),
        "peak_kw": value.max(),
        "estimated_share": pl.col("_estimated").mean(),
        "missing_share": (~usable).mean(),
    }
    ordered = _in_meter_time_order(estimated_day)
    if ordered:
        # VEE writes its grid meter by meter in time order: a meter's hour is then a run of
        # neighbouring rows, numbered by where (meter, hour) changes, and grouping by that number
        # costs half of grouping by (meter text, instant).
        meter, hour = pl.col("meter_id"), pl.col("hour_start_utc")
        run = ((meter != meter.shift()) | (hour != hour.shift())).fill_null(True).cum_sum()
        hourly = (
            framed.group_by(run.alias("_run"), maintain_order=True)
            .agg(
                meter.first(),
                hour.first(),
                pl.col("local_date").first(),
                pl.col("local_hour").first(),
                **per_hour,
            )
            .drop("_run")
        )
    else:
        hourly = framed.group_by("meter_id", "hour_start_utc").agg(
            pl.col("local_date").first(), pl.col("local_hour").first(), **per_hour
        )
    weekday = pl.col("local_date").dt.weekday().cast(pl.Int8)
    # Only the dates looked up: a day and a week before each local date being built.
    built = hourly.get_column("local_date").unique().to_list()
    wanted = sorted({d - timedelta(days=back) for d in built for back in (1, 7)})
    table = hourly.with_columns(
        weekday=weekday,
        is_weekend=weekday >= 6,
        is_holiday=pl.col("local_date").is_in(list(config.holidays)),
    )
    lookup = None
    for back, name in ((1, "prev_day_same_hour_kwh"), (7, "prev_week_same_hour_kwh")):
        aligned = _aligned_kwh(hourly, history_hourly, built, back, config.timezone)
        if aligned is not None:
            table = table.with_columns(aligned.alias(name))
            continue
        if lookup is None:
            lookup = _same_hour_kwh(hourly, history_hourly, config.timezone, built, wanted)
        table = (
            table.with_columns(_then=pl.col("local_date").dt.offset_by(f"-{back}d"))
            .join(
                lookup.rename({"local_date": "_then", "kwh": name}),
                on=["meter_id", "_then", "local_hour"],
                how="left",
                maintain_order="left",
            )
            .drop("_then")
        )
    return (
        table.select(*HOURLY_FEATURES_SCHEMA)
        # Grouped in the grid's order, the hours are in (meter_id, hour_start_utc) order already.
        .pipe(lambda frame: frame if ordered else frame.sort("meter_id", "hour_start_utc"))
        .cast(HOURLY_FEATURES_SCHEMA)
    )


def _aligned_kwh(
    hourly: pl.DataFrame, history_hourly: pl.DataFrame | None, built: list[date], back: int, timezone: str
) -> pl.Series | None:
    """The ``kwh`` of the same meter and local hour ``back`` days before each row of ``hourly``,
    without a join, when that day's history holds exactly ``hourly``'s meters and hours in the
    same order (an earlier day of the same meters, written the same way: the usual case) or
    nothing; None when it does not, and the lookup join is needed. Only for one local date being
    built, and not across a fall-back day, whose repeated hour is looked up as a mean."""
    if len(built) != 1:
        return None
    target = built[0] - timedelta(days=back)
    if _day_hours(target, timezone) > 24:
        return None
    nothing = pl.repeat(None, hourly.height, dtype=pl.Float64, eager=True)
    if history_hourly is None:
        return nothing
    older = history_hourly.filter(pl.col("local_date") == target)
    if older.height == 0:
        return nothing
    if older.height != hourly.height:
        return None
    same = hourly.select(
        (pl.col("meter_id") == older.get_column("meter_id").cast(pl.String)).all()
        & (pl.col("local_hour") == older.get_column("local_hour").cast(pl.Int8)).all()
    ).item()
    return older.get_column("kwh").cast(pl.Float64) if same else None
