"""Validation, Estimation, Editing: completeness per meter and local day, and estimates for the gaps.

The day is a local day in ``config.timezone`` (23 or 25 hours on daylight-saving days), cut into
``interval_minutes`` intervals from local midnight. Every interval of every meter gets one row and
a quality code:

- ``actual``, ``anomaly``, ``faulty``: the meter sent a value (flagged ``is_anomaly`` /
  ``is_faulty`` by the rule book); it is kept as sent, never replaced.
- ``estimated_linear``: a gap of at most ``short_gap_minutes`` (missing intervals and null
  readings) with ``actual`` readings right before and after it, interpolated linearly in time.
- ``estimated_history``: any other gap interval, valued at the mean of the meter's ``actual``
  readings at the same local weekday and local time of day over the previous ``history_weeks``
  weeks.
- ``missing``: a gap interval neither rule could estimate.

Choices, as an MDM's VEE makes them:

- Only readings that passed validation (code ``actual``) are sources for estimates: an anomaly or
  a stuck (faulty) reading next to a gap does not anchor an interpolation, and the gap falls back
  to history. A short gap that touches the day's edge is interpolated when the readings or history
  frames hold the neighbour on the other side of midnight; otherwise it falls back to history too.
- Readings off the interval grid (e.g. 08:07 on a 15-minute grid) are not intervals: they are
  neither counted as received nor used as anchors.
- The meters are those present in the day's ``readings`` frame (a row, even a missing one, is
  enough); anomalies and faulty readings were received and count toward completeness.
"""

from __future__ import annotations

import functools
import operator
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import polars as pl

from greenstream_assets.rules.config import RulesConfig
from greenstream_assets.rules.timestamps import instants_overlap

ACTUAL = "actual"
ESTIMATED_LINEAR = "estimated_linear"
ESTIMATED_HISTORY = "estimated_history"
MISSING = "missing"
ANOMALY = "anomaly"
FAULTY = "faulty"
QUALITY_CODES = (ACTUAL, ESTIMATED_LINEAR, ESTIMATED_HISTORY, MISSING, ANOMALY, FAULTY)
ESTIMATED_CODES = (ESTIMATED_LINEAR, ESTIMATED_HISTORY)

KEY = ("meter_id", "reading_ts")
COMPLETENESS_SCHEMA = {
    "meter_id": pl.String,
    "expected_intervals": pl.UInt32,
    "received_intervals": pl.UInt32,
    "missing_intervals": pl.UInt32,
    "completeness_ratio": pl.Float64,
}
ESTIMATE_SCHEMA = {
    "meter_id": pl.String,
    "reading_ts": pl.Datetime("us", "UTC"),
    "energy_kw": pl.Float64,
    "estimated_kw": pl.Float64,
    "value_kw": pl.Float64,
    "quality_code": pl.String,
}
# A quality code in memory: its text, stored as a byte. The reports and features made from a grid
# compare it several times over 4.8M rows (~0.03 s each as text, ~0.001 s as an enum).
QUALITY_ENUM = pl.Enum(QUALITY_CODES)
ESTIMATE_CODED_SCHEMA = {**ESTIMATE_SCHEMA, "quality_code": QUALITY_ENUM}


# What estimate() and completeness() read of the day's flagged readings.
READING_COLUMNS = ("meter_id", "reading_ts", "energy_kw", "is_missing", "is_anomaly", "is_faulty")
_KNOWN_SCHEMA = {
    "meter_id": pl.String,
    "reading_ts": pl.Datetime("us", "UTC"),
    "energy_kw": pl.Float64,
    "is_missing": pl.Boolean,
    "is_anomaly": pl.Boolean,
    "is_faulty": pl.Boolean,
}


def local_day_bounds(local_day: date, timezone: str) -> tuple[datetime, datetime]:
    """The UTC instants [start, end) of a local calendar day: local midnight to the next one.

    Where midnight falls in a spring-forward gap, the day starts at the first local instant after it.
    """
    zone = ZoneInfo(timezone)
    start = datetime.combine(local_day, time(), zone).astimezone(UTC)
    end = datetime.combine(local_day + timedelta(days=1), time(), zone).astimezone(UTC)
    return start, end


def partition_local_day(day: date, timezone: str) -> date:
    """The local day that the UTC day partition ``day`` estimates and reports: the latest local day
    whose readings are all in by the end of ``day`` (UTC), so that no partition reports a local
    day before its last hours have arrived.

    In UTC and east of it (a standard offset of 0 or more) that is ``day`` itself: its local day
    ends by the end of the UTC day (the hours before, in the previous UTC day, are read back from
    that day's archive). West of UTC the local ``day`` ends in the next UTC day, the next
    partition's: ``day`` reports the local day before it, which ends inside ``day``. Decided by the
    zone's standard offset, not the day's own, so that daylight-saving time never skips a local
    day nor reports one twice.
    """
    noon = datetime.combine(day, time(12), ZoneInfo(timezone))
    offset = noon.utcoffset() or timedelta(0)
    standard = offset - (noon.dst() or timedelta(0))
    return day - timedelta(days=1) if standard < timedelta(0) else day


def history_days(day: date, config: RulesConfig) -> list[date]:
    """The UTC day partitions before ``day`` whose archived readings ``estimate`` needs for the
    partition's local day (``partition_local_day``): those within a short gap's reach of it, and
    those that hold the same local weekday of the previous ``history_weeks`` weeks (a local day
    can span two UTC days). Newest first."""
    local_day = partition_local_day(day, config.timezone)
    first, last = _reach(local_day, config)
    ranges = [(first, last)] + [
        local_day_bounds(d, config.timezone) for d in _history_weeks(local_day, config)
    ]
    days = set()
    for lo, hi in ranges:
        each = lo.date()
        while datetime.combine(each, time(), UTC) < hi:
            if each < day:
                days.add(each)
            each += timedelta(days=1)
    return sorted(days, reverse=True)


def expected_intervals(local_day: date, timezone: str, interval_minutes: int) -> int:
    """How many intervals a meter should send for a local day: 96 of 15 minutes, 92 or 100 on DST days."""
    start, end = local_day_bounds(local_day, timezone)
    return (end - start) // timedelta(minutes=interval_minutes)


def _grid(meters: pl.DataFrame, start: datetime, end: datetime, interval_minutes: int) -> pl.DataFrame:
    """Every meter crossed with every interval start in [start, end)."""
    instants = pl.datetime_range(
        start,
        end,
        timedelta(minutes=interval_minutes),
        closed="left",
        time_unit="us",
        time_zone="UTC",
        eager=True,
    )
    # Meter by meter, each in time order: sorted by (meter_id, reading_ts) when ``meters`` is sorted.
    return meters.join(instants.alias("reading_ts").to_frame(), how="cross", maintain_order="left_right")


def _known(readings: pl.DataFrame, history: pl.DataFrame | None) -> pl.DataFrame:
    """Readings and history in one frame (the day's readings win), flags defaulted to False."""

    def normalized(frame: pl.DataFrame) -> pl.DataFrame:
        flags = [pl.lit(False).alias(c) for c in ("is_anomaly", "is_faulty") if c not in frame.columns]
        return frame.with_columns(flags).select(*_KNOWN_SCHEMA).cast(_KNOWN_SCHEMA)

    known = normalized(readings)
    if history is not None:
        earlier = normalized(history)
        # History from other days shares no instant with the readings (the usual case): nothing to
        # drop, so no join. Otherwise the readings' rows win.
        if instants_overlap(earlier, known):
            earlier = earlier.join(known, on=KEY, how="anti", maintain_order="left")
        known = pl.concat([known, earlier])
    return known


# A reading's quality code is handled as a small integer, its position in QUALITY_CODES.
_CODE_INDEX = {code: i for i, code in enumerate(QUALITY_CODES)}


def _reading_code_index() -> pl.Expr:
    """The quality code of a reading the meter sent, as its index in ``QUALITY_CODES`` (UInt8);
    null where there is no value."""
    present = ~pl.col("is_missing") & pl.col("energy_kw").is_not_null()
    return (
        pl.when(~present)
        .then(None)
        .when(pl.col("is_anomaly"))
        .then(pl.lit(_CODE_INDEX[ANOMALY]))
        .when(pl.col("is_faulty"))
        .then(pl.lit(_CODE_INDEX[FAULTY]))
        .otherwise(pl.lit(_CODE_INDEX[ACTUAL]))
        .cast(pl.UInt8)
    )


def _meters(readings: pl.DataFrame) -> pl.DataFrame:
    return readings.select(pl.col("meter_id").cast(pl.String)).unique().sort("meter_id")


def completeness(readings: pl.DataFrame, day: date, config: RulesConfig) -> pl.DataFrame:
    """Per meter: expected intervals of the local ``day``, intervals received with a value, ratio.

    ``completeness_ratio`` is received / expected, rounded to six decimals.
    ``readings`` must cover the whole local day (two UTC days where the zone is not UTC).
    """
    start, end = local_day_bounds(day, config.timezone)
    expected = expected_intervals(day, config.timezone, config.interval_minutes)
    meters = _meters(readings)
    # An interval is received when a reading with a value sits exactly on its start: in
    # [start, end) and a whole number of intervals after the local midnight.
    step_us = config.interval_minutes * 60_000_000
    since_start = (pl.col("reading_ts") - pl.lit(start)).dt.total_microseconds()
    received = (
        _known(readings, None)
        .filter(_reading_code_index().is_not_null())
        .filter((pl.col("reading_ts") >= start) & (pl.col("reading_ts") < end) & (since_start % step_us == 0))
        .group_by("meter_id")
        .agg(received_intervals=pl.col("reading_ts").n_unique())
    )
    return _completeness_frame(meters.join(received, on="meter_id", how="left"), expected)


# The quality codes of an interval the meter sent a value for.
RECEIVED_CODES = (ACTUAL, ANOMALY, FAULTY)


def completeness_from_estimate(estimated: pl.DataFrame, day: date, config: RulesConfig) -> pl.DataFrame:
    """``completeness`` of the readings ``estimated`` was made from (``estimate``'s output for the
    same local ``day``), counted off its grid instead of going over the readings again: an interval
    was received where its quality code says the meter sent it."""
    expected = expected_intervals(day, config.timezone, config.interval_minutes)
    # The codes compared over the whole column first: is_in inside the aggregation ran per meter.
    received = (
        estimated.select("meter_id", _received=pl.col("quality_code").is_in(list(RECEIVED_CODES)))
        .group_by("meter_id")
        .agg(received_intervals=pl.col("_received").sum())
    )
    return _completeness_frame(received, expected)


def _completeness_frame(received: pl.DataFrame, expected: int) -> pl.DataFrame:
    """Per meter (``meter_id``, ``received_intervals``, null for none): the completeness columns."""
    return (
        received.select(
            "meter_id",
            expected_intervals=pl.lit(expected),
            received_intervals=pl.col("received_intervals").fill_null(0),
        )
        .with_columns(
            missing_intervals=pl.col("expected_intervals") - pl.col("received_intervals"),
            # Rounded: polars divides by a broadcast scalar via its reciprocal, off in the last bit.
            completeness_ratio=(pl.col("received_intervals") / pl.col("expected_intervals")).round(6),
        )
        .sort("meter_id")
        .cast(COMPLETENESS_SCHEMA)
    )


def _history_weeks(day: date, config: RulesConfig) -> list[date]:
    """The local days whose readings give a long gap's estimate: the same weekday of earlier weeks."""
    return [day - timedelta(weeks=k) for k in range(1, config.history_weeks + 1)]


def _reach(day: date, config: RulesConfig) -> tuple[datetime, datetime]:
    """[first, last): the local ``day`` widened far enough to find both neighbours of any short
    gap that touches it."""
    start, end = local_day_bounds(day, config.timezone)
    reach = (config.short_gap_minutes // config.interval_minutes + 1) * timedelta(
        minutes=config.interval_minutes
    )
    return start - reach, end + reach


def history_window(day: date, config: RulesConfig) -> pl.Expr:
    """The rows of earlier days that ``estimate`` uses for the local ``day``: those within a short
    gap's reach of it, and those of the same weekday in the previous ``history_weeks`` weeks (as
    UTC ranges, so a Parquet reader can apply it). A history filtered by it gives the same estimate
    (tested); of the previous day it keeps the last hours instead of all of it."""
    ts = pl.col("reading_ts")
    first, last = _reach(day, config)
    ranges = [(first, last)] + [local_day_bounds(d, config.timezone) for d in _history_weeks(day, config)]
    return functools.reduce(operator.or_, ((ts >= lo) & (ts < hi) for lo, hi in ranges))


def _history_means(known: pl.DataFrame, day: date, config: RulesConfig) -> pl.DataFrame:
    """Per meter and local time of day: mean actual kW on the same weekday of earlier weeks."""
    ts = pl.col("reading_ts")
    weeks = [local_day_bounds(d, config.timezone) for d in _history_weeks(day, config)]
    # Those weeks as UTC ranges first: the local time is worked out for their rows only.
    in_weeks = functools.reduce(operator.or_, ((ts >= lo) & (ts < hi) for lo, hi in weeks), pl.lit(False))
    return (
        known.filter(in_weeks)
        .filter(_reading_code_index() == _CODE_INDEX[ACTUAL])
        .group_by("meter_id", ts.dt.convert_time_zone(config.timezone).dt.time().alias("_local_time"))
        .agg(_history_kw=pl.col("energy_kw").mean())
    )


def estimate(
    readings: pl.DataFrame, history: pl.DataFrame | None, config: RulesConfig, day: date
) -> pl.DataFrame:
    """``estimate_coded`` with ``quality_code`` as text: the frame ``ESTIMATE_SCHEMA`` describes."""
    return estimate_coded(readings, history, config, day).cast(ESTIMATE_SCHEMA)


def estimate_coded(
    readings: pl.DataFrame, history: pl.DataFrame | None, config: RulesConfig, day: date
) -> pl.DataFrame:
    """The full interval grid of the local ``day`` for every meter in ``readings``, gaps estimated.

    ``readings``: the day's flagged readings (``meter_id``, ``reading_ts``, ``energy_kw``,
    ``is_missing``; ``is_anomaly``/``is_faulty`` default to False). ``history``: a frame like it
    from earlier days (the previous ``history_weeks`` weeks, and the previous day's tail for gaps
    crossing midnight), or None. Columns as in ``ESTIMATE_CODED_SCHEMA`` (``ESTIMATE_SCHEMA`` with
    ``quality_code`` an enum of ``QUALITY_CODES``): ``energy_kw`` is what the meter
    sent (null in gaps), ``estimated_kw`` the estimate (null where the meter sent a value),
    ``value_kw`` the one of the two to use, ``quality_code`` one of ``QUALITY_CODES``.
    """
    start, end = local_day_bounds(day, config.timezone)
    step = timedelta(minutes=config.interval_minutes)
    step_us = config.interval_minutes * 60_000_000
    # Far enough beyond the day to find both neighbours of any short gap that touches it.
    first, last = _reach(day, config)
    known = _known(readings, history)
    meters = _meters(readings)
    # Meter by meter, each in time order: row i is meter i // per_meter at interval i % per_meter.
    grid = _grid(meters, first, last, config.interval_minutes)
    per_meter = grid.height // max(1, meters.height)
    # The known rows the grid meets (on an interval start inside it; the history's earlier weeks
    # are for the means), placed at their grid row by position: no join of 5M (meter, instant) keys.
    offset = (pl.col("reading_ts") - pl.lit(first)).dt.total_microseconds()
    near = (
        known.filter((pl.col("reading_ts") >= first) & (pl.col("reading_ts") < last))
        .filter(offset % step_us == 0)
        .join(meters.with_row_index("_meter"), on="meter_id", how="inner")
        .select(
            _row=pl.col("_meter").cast(pl.Int64) * per_meter + offset // step_us,
            energy_kw="energy_kw",
            _code=_reading_code_index(),
        )
    )
    # A (meter, instant) is known once: the day's readings are unique on it (cleansed) and
    # _known drops history rows the readings have.
    rows = near.get_column("_row")
    grid = grid.with_columns(
        pl.repeat(None, grid.height, dtype=pl.Float64, eager=True)
        .scatter(rows, near.get_column("energy_kw"))
        .alias("energy_kw"),
        pl.repeat(None, grid.height, dtype=pl.UInt8, eager=True)
        .scatter(rows, near.get_column("_code"))
        .alias("_code"),
    )
    del near, rows

    # Only the gaps inside the day need an estimate (about 1% of a day's intervals): find them,
    # work their estimates out on their own, and place those back at their grid rows.
    lead = (start - first) // step
    n_day = -(-(end - start) // step)  # the grid instants in [start, end)
    sent_rows = grid.get_column("_code").is_not_null().arg_true()
    position = pl.col("_row") % per_meter
    gaps = (
        grid.select("meter_id", "reading_ts", "_code")
        .with_row_index("_row")
        .filter(pl.col("_code").is_null() & (position >= lead) & (position < lead + n_day))
        .drop("_code")
    )
    estimates = _gap_estimates(gaps, grid, sent_rows, known, per_meter, first, day, config)
    # Row r of the grid (meter r // per_meter, interval r % per_meter) is row
    # (r // per_meter) * n_day + r % per_meter - lead of the day's grid.
    at = (gaps.get_column("_row") // per_meter * n_day + gaps.get_column("_row") % per_meter - lead).cast(
        pl.Int64
    )
    ts = pl.col("reading_ts")
    codes = pl.Series(QUALITY_CODES, dtype=QUALITY_ENUM)
    day_grid = grid.filter((ts >= start) & (ts < end))
    estimated_kw = pl.repeat(None, day_grid.height, dtype=pl.Float64, eager=True).scatter(
        at, estimates.get_column("estimated_kw")
    )
    code = day_grid.get_column("_code").scatter(at, estimates.get_column("_code"))
    return (
        day_grid.select(
            "meter_id",
            "reading_ts",
            # What the meter sent: only where it sent a value (a missing reading's row is a gap).
            energy_kw=pl.when(pl.col("_code").is_not_null()).then("energy_kw"),
            estimated_kw=estimated_kw,
            value_kw=pl.coalesce(pl.when(pl.col("_code").is_not_null()).then("energy_kw"), estimated_kw),
            quality_code=pl.lit(codes).gather(code),
        )
        # Already in (meter_id, reading_ts) order: the grid's.
        .cast(ESTIMATE_CODED_SCHEMA)
    )


def _gap_estimates(
    gaps: pl.DataFrame,
    grid: pl.DataFrame,
    sent_rows: pl.Series,
    known: pl.DataFrame,
    per_meter: int,
    first: datetime,
    day: date,
    config: RulesConfig,
) -> pl.DataFrame:
    """For each gap row of the grid (``_row``, ``meter_id``, ``reading_ts``): ``estimated_kw`` and
    the quality code's index (``_code``), by linear interpolation between the sent values right
    before and after the gap when both are actual and the gap is short, else the history mean."""
    step = timedelta(minutes=config.interval_minutes)
    step_us = config.interval_minutes * 60_000_000
    actual = _CODE_INDEX[ACTUAL]
    energy = grid.get_column("energy_kw")
    code = grid.get_column("_code")
    row = pl.col("_row").cast(pl.Int64)
    # A gap is a run of rows without a value: its neighbours are the nearest sent rows before and
    # after it, when they are the same meter's.
    after = pl.lit(sent_rows).search_sorted(pl.col("_row")).cast(pl.Int64)
    sent = pl.lit(sent_rows).cast(pl.Int64)

    def neighbour(index: pl.Expr) -> pl.Expr:
        source = sent.gather(pl.when((index >= 0) & (index < sent_rows.len())).then(index))
        return pl.when(source // per_meter == row // per_meter).then(source)

    def instant(index: str) -> pl.Expr:
        return pl.lit(first) + pl.duration(microseconds=(pl.col(index) % per_meter) * step_us)

    with_neighbours = gaps.with_columns(_prev=neighbour(after - 1), _next=neighbour(after)).with_columns(
        _prev_ts=instant("_prev"),
        _prev_kw=pl.lit(energy).gather(pl.col("_prev")),
        _prev_code=pl.lit(code).gather(pl.col("_prev")),
        _next_ts=instant("_next"),
        _next_kw=pl.lit(energy).gather(pl.col("_next")),
        _next_code=pl.lit(code).gather(pl.col("_next")),
    )
    ts = pl.col("reading_ts")
    span = pl.col("_next_ts") - pl.col("_prev_ts")
    is_short = (
        (pl.col("_prev_code") == actual)
        & (pl.col("_next_code") == actual)
        & (span - step <= timedelta(minutes=config.short_gap_minutes))
    ).fill_null(False)
    linear = pl.col("_prev_kw") + (pl.col("_next_kw") - pl.col("_prev_kw")) * (
        (ts - pl.col("_prev_ts")).dt.total_microseconds() / span.dt.total_microseconds()
    )
    return (
        with_neighbours.with_columns(_local_time=ts.dt.convert_time_zone(config.timezone).dt.time())
        .join(
            _history_means(known, day, config),
            on=["meter_id", "_local_time"],
            how="left",
            maintain_order="left",
        )
        .select(
            estimated_kw=pl.when(is_short).then(linear).otherwise("_history_kw"),
            _code=pl.when(is_short)
            .then(pl.lit(_CODE_INDEX[ESTIMATED_LINEAR]))
            .when(pl.col("_history_kw").is_not_null())
            .then(pl.lit(_CODE_INDEX[ESTIMATED_HISTORY]))
            .otherwise(pl.lit(_CODE_INDEX[MISSING]))
            .cast(pl.UInt8),
        )
    )
