"""VEE: completeness per local day (DST aware), linear and history estimates, quality codes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from greenstream_assets.rules import vee
from greenstream_assets.rules.config import RulesConfig
from greenstream_assets.rules.vee import (
    COMPLETENESS_SCHEMA,
    ESTIMATE_SCHEMA,
    completeness,
    completeness_from_estimate,
    estimate,
    expected_intervals,
    history_window,
    local_day_bounds,
)

from .helpers import DAY, readings_frame, utc

CONFIG = RulesConfig()
BERLIN = RulesConfig(timezone="Europe/Berlin")
Q = timedelta(minutes=15)
MIDNIGHT = utc(2024, 6, 3)
SPRING, AUTUMN = date(2024, 3, 31), date(2024, 10, 27)  # Berlin's DST days in 2024


def series(meter_id: str, start: datetime, kws: list[float | None]) -> list[tuple]:
    """Readings every 15 minutes from ``start`` (None = a missing reading row)."""
    return [(meter_id, start + i * Q, kw, kw is None, False) for i, kw in enumerate(kws)]


def flagged(rows: list[tuple], faulty_at: tuple[datetime, ...] = ()) -> pl.DataFrame:
    return readings_frame(rows).with_columns(is_faulty=pl.col("reading_ts").is_in(list(faulty_at)))


def codes_and_values(estimated: pl.DataFrame, start: datetime, count: int) -> list[tuple]:
    window = estimated.filter(pl.col("reading_ts").is_between(start, start + (count - 1) * Q))
    return window.select("quality_code", "value_kw").rows()


def test_defaults() -> None:
    assert (CONFIG.short_gap_minutes, CONFIG.history_weeks, CONFIG.interval_minutes) == (60, 4, 15)


# --- expected intervals and completeness ------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "timezone", "interval_minutes", "expected"),
    [
        (SPRING, "Europe/Berlin", 15, 92),
        (AUTUMN, "Europe/Berlin", 15, 100),
        (DAY, "Europe/Berlin", 15, 96),
        (SPRING, "UTC", 15, 96),
        (SPRING, "Europe/Berlin", 30, 46),
        (AUTUMN, "Europe/Berlin", 60, 25),
        (date(2024, 3, 10), "America/New_York", 15, 92),
        (date(2024, 11, 3), "America/New_York", 15, 100),
        (date(2024, 9, 8), "America/Santiago", 15, 92),  # clocks jump at midnight itself
    ],
)
def test_expected_intervals(day: date, timezone: str, interval_minutes: int, expected: int) -> None:
    assert expected_intervals(day, timezone, interval_minutes) == expected


@pytest.mark.parametrize(
    ("day", "start", "end"),
    [
        (SPRING, utc(2024, 3, 30, 23), utc(2024, 3, 31, 22)),
        (AUTUMN, utc(2024, 10, 26, 22), utc(2024, 10, 27, 23)),
        (DAY, utc(2024, 6, 2, 22), utc(2024, 6, 3, 22)),
    ],
)
def test_local_day_bounds(day: date, start: datetime, end: datetime) -> None:
    assert local_day_bounds(day, "Europe/Berlin") == (start, end)


def completeness_frame(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=COMPLETENESS_SCHEMA, orient="row")


@pytest.mark.parametrize(("day", "expected"), [(SPRING, 92), (AUTUMN, 100), (DAY, 96)])
def test_completeness_on_berlin_days(day: date, expected: int) -> None:
    start, _ = local_day_bounds(day, "Europe/Berlin")
    full = [1.0] * expected
    full[10] = None  # a missing reading row
    m1 = [row for i, row in enumerate(series("m1", start, full)) if i not in (20, 21)]  # two never sent
    m1 += [
        ("m1", start - Q, 1.0, False, False),  # the previous local day
        ("m1", start + expected * Q, 1.0, False, False),  # the next local day
        ("m1", start + timedelta(minutes=7), 1.0, False, False),  # off the interval grid
    ]
    m2 = series("m2", start, [None, None])
    m3 = series("m3", start, [2.0] * 49) + [("m3", start + 49 * Q, 500.0, False, True)]  # anomaly received
    readings = readings_frame(m1 + m2 + m3)
    found = completeness(readings, day, BERLIN)
    expected_frame = completeness_frame(
        [
            ("m1", expected, expected - 3, 3, round((expected - 3) / expected, 6)),
            ("m2", expected, 0, expected, 0.0),
            ("m3", expected, 50, expected - 50, round(50 / expected, 6)),
        ]
    )
    assert_frame_equal(found, expected_frame, check_exact=True)
    # The same counted off the estimate's grid (what the asset does).
    from_grid = completeness_from_estimate(estimate(readings, None, BERLIN, day), day, BERLIN)
    assert_frame_equal(from_grid, expected_frame, check_exact=True)


def test_completeness_counts_the_repeated_autumn_hour_twice() -> None:
    # 00:00 UTC and 01:00 UTC on 2024-10-27 are both 02:00-ish local: two distinct intervals.
    rows = series("m1", utc(2024, 10, 27, 0), [1.0] * 8)
    found = completeness(readings_frame(rows), AUTUMN, BERLIN)
    assert found.select("received_intervals", "missing_intervals").row(0) == (8, 92)
    from_grid = completeness_from_estimate(
        estimate(readings_frame(rows), None, BERLIN, AUTUMN), AUTUMN, BERLIN
    )
    assert_frame_equal(from_grid, found, check_exact=True)


# --- the grid and actual readings ---------------------------------------------------------------


@pytest.mark.parametrize(("day", "rows"), [(SPRING, 92), (AUTUMN, 100), (DAY, 96)])
def test_full_grid_per_meter(day: date, rows: int) -> None:
    start, end = local_day_bounds(day, "Europe/Berlin")
    readings = readings_frame([("m2", end - Q, None, True, False), ("m1", start + 4 * Q, 1.0, False, False)])
    estimated = estimate(readings, None, BERLIN, day)
    assert estimated.group_by("meter_id").len().sort("meter_id").rows() == [("m1", rows), ("m2", rows)]
    # Meter by meter, in time order, whatever order the readings came in.
    assert estimated.select("meter_id", "reading_ts").rows() == [
        (meter, ts) for meter in ("m1", "m2") for ts in estimated.get_column("reading_ts").unique().sort()
    ]
    assert estimated.get_column("reading_ts").min() == start
    assert estimated.get_column("reading_ts").max() == end - Q
    assert estimated.schema == pl.Schema(ESTIMATE_SCHEMA)


def test_actual_readings_are_kept_and_coded() -> None:
    rows = series("m1", MIDNIGHT, [1.0, 150.0, 0.0, 2.0])
    readings = flagged(rows, faulty_at=(MIDNIGHT + 2 * Q,)).with_columns(is_anomaly=pl.col("energy_kw") > 100)
    estimated = estimate(readings, None, CONFIG, DAY).head(5)
    expected = pl.DataFrame(
        [
            ("m1", MIDNIGHT, 1.0, None, 1.0, "actual"),
            ("m1", MIDNIGHT + Q, 150.0, None, 150.0, "anomaly"),
            ("m1", MIDNIGHT + 2 * Q, 0.0, None, 0.0, "faulty"),
            ("m1", MIDNIGHT + 3 * Q, 2.0, None, 2.0, "actual"),
            ("m1", MIDNIGHT + 4 * Q, None, None, None, "missing"),
        ],
        schema=ESTIMATE_SCHEMA,
        orient="row",
    )
    assert_frame_equal(estimated, expected, check_exact=True)


def test_meter_with_only_missing_rows_is_all_missing() -> None:
    estimated = estimate(readings_frame(series("m1", MIDNIGHT, [None] * 3)), None, CONFIG, DAY)
    assert estimated.get_column("quality_code").unique().to_list() == ["missing"]
    assert estimated.get_column("value_kw").null_count() == 96


# --- linear interpolation of short gaps ---------------------------------------------------------

T8 = utc(2024, 6, 3, 8, 0)


def gap_readings(missing: int, right_kw: float, as_rows: bool = False) -> list[tuple]:
    """1.0 kW at 08:00, ``missing`` intervals without value, ``right_kw`` after them."""
    gap = series("m1", T8 + Q, [None] * missing) if as_rows else []
    return [("m1", T8, 1.0, False, False), *gap, ("m1", T8 + (missing + 1) * Q, right_kw, False, False)]


@pytest.mark.parametrize(
    ("missing", "right_kw", "values"),
    [
        pytest.param(1, 2.0, [1.5], id="one_interval"),
        pytest.param(2, 2.5, [1.5, 2.0], id="30_min"),
        pytest.param(3, 3.0, [1.5, 2.0, 2.5], id="45_min"),
        pytest.param(4, 3.5, [1.5, 2.0, 2.5, 3.0], id="60_min_at_the_limit"),
        pytest.param(2, 0.0, [2 / 3, 1 / 3], id="downwards"),
    ],
)
@pytest.mark.parametrize("as_rows", [False, True], ids=["intervals_never_sent", "null_reading_rows"])
def test_short_gap_is_interpolated(missing: int, right_kw: float, values: list[float], as_rows: bool) -> None:
    estimated = estimate(readings_frame(gap_readings(missing, right_kw, as_rows)), None, CONFIG, DAY)
    gap = estimated.filter(pl.col("reading_ts").is_between(T8 + Q, T8 + missing * Q))
    assert gap.get_column("quality_code").to_list() == ["estimated_linear"] * missing
    assert gap.get_column("estimated_kw").to_list() == pytest.approx(values, rel=1e-15)
    assert gap.get_column("value_kw").to_list() == gap.get_column("estimated_kw").to_list()
    assert gap.get_column("energy_kw").null_count() == missing
    # The neighbours are untouched actual readings.
    assert codes_and_values(estimated, T8, 1) == [("actual", 1.0)]
    assert codes_and_values(estimated, T8 + (missing + 1) * Q, 1) == [("actual", right_kw)]


def test_interpolation_is_linear_in_time_between_uneven_values() -> None:
    estimated = estimate(readings_frame(gap_readings(2, 2.0)), None, CONFIG, DAY)
    gap = estimated.filter(pl.col("quality_code") == "estimated_linear")
    assert gap.get_column("estimated_kw").to_list() == pytest.approx([4 / 3, 5 / 3], rel=1e-15)


@pytest.mark.parametrize(
    ("short_gap_minutes", "missing", "code"),
    [
        (60, 5, "missing"),  # 75 minutes: too long, and no history
        (30, 2, "estimated_linear"),
        (30, 3, "missing"),
        (90, 6, "estimated_linear"),
    ],
)
def test_short_gap_limit_is_configurable(short_gap_minutes: int, missing: int, code: str) -> None:
    config = RulesConfig(short_gap_minutes=short_gap_minutes)
    estimated = estimate(readings_frame(gap_readings(missing, 5.0)), None, config, DAY)
    assert [c for c, _ in codes_and_values(estimated, T8 + Q, missing)] == [code] * missing


@pytest.mark.parametrize("neighbour", ["anomaly", "faulty"])
@pytest.mark.parametrize("side", ["before", "after"])
def test_gap_next_to_an_invalid_reading_is_not_interpolated(neighbour: str, side: str) -> None:
    at = T8 if side == "before" else T8 + 2 * Q
    readings = flagged(gap_readings(1, 2.0), faulty_at=(at,) if neighbour == "faulty" else ())
    if neighbour == "anomaly":
        readings = readings.with_columns(is_anomaly=pl.col("reading_ts") == at)
    estimated = estimate(readings, None, CONFIG, DAY)
    assert codes_and_values(estimated, T8 + Q, 1) == [("missing", None)]
    assert codes_and_values(estimated, at, 1)[0][0] == neighbour


def test_gap_across_midnight_uses_the_previous_day_as_neighbour() -> None:
    # 00:00 missing on the day; 23:45 the day before is in history.
    readings = readings_frame(series("m1", MIDNIGHT + Q, [3.0]))
    history = readings_frame([("m1", MIDNIGHT - Q, 1.0, False, False)])
    assert codes_and_values(estimate(readings, history, CONFIG, DAY), MIDNIGHT, 1) == [
        ("estimated_linear", 2.0)
    ]
    assert codes_and_values(estimate(readings, None, CONFIG, DAY), MIDNIGHT, 1) == [("missing", None)]


def test_gap_at_the_end_of_the_day_without_the_next_day_stays_missing() -> None:
    last = utc(2024, 6, 3, 23, 30)
    readings = readings_frame(series("m1", last, [1.0]))
    assert codes_and_values(estimate(readings, None, CONFIG, DAY), last, 2) == [
        ("actual", 1.0),
        ("missing", None),
    ]


# --- history estimates for long gaps ------------------------------------------------------------

T12 = utc(2024, 6, 3, 12, 0)  # a Monday


def long_gap_day() -> pl.DataFrame:
    """m1 actual 1.0 all day except 12:00-13:45 (8 intervals, two hours)."""
    kws: list[float | None] = [1.0] * 96
    kws[48:56] = [None] * 8
    return readings_frame(series("m1", MIDNIGHT, kws))


def history_frame() -> pl.DataFrame:
    week = timedelta(weeks=1)
    rows = [
        ("m1", T12 - week, 2.0, False, False),
        ("m1", T12 - 2 * week, 4.0, False, False),
        ("m1", T12 - 3 * week, 6.0, False, False),
        ("m1", T12 - 4 * week, 8.0, False, False),
        ("m1", T12 - 5 * week, 100.0, False, False),  # beyond four weeks
        ("m1", T12 - timedelta(days=1), 50.0, False, False),  # Sunday, not Monday
        ("m1", T12 - 2 * week + 2 * Q, 500.0, False, True),  # anomaly: not a source
        ("m1", T12 - week + 2 * Q, 3.0, False, False),
        ("m1", T12 - week + 3 * Q, None, True, False),
        ("m2", T12 - week + Q, 9.0, False, False),  # another meter
    ]
    return readings_frame(rows)


@pytest.mark.parametrize(("weeks", "kw_at_noon"), [(1, 2.0), (2, 3.0), (3, 4.0), (4, 5.0), (5, 24.0)])
def test_long_gap_from_same_weekday_and_time_in_history(weeks: int, kw_at_noon: float) -> None:
    estimated = estimate(long_gap_day(), history_frame(), RulesConfig(history_weeks=weeks), DAY)
    assert codes_and_values(estimated, T12, 4) == [
        ("estimated_history", kw_at_noon),
        ("missing", None),
        ("estimated_history", 3.0),
        ("missing", None),
    ]
    assert estimated.filter(pl.col("reading_ts") == T12).get_column("energy_kw").to_list() == [None]


def test_short_gap_without_actual_neighbours_falls_back_to_history() -> None:
    readings = flagged(gap_readings(1, 2.0), faulty_at=(T8,))
    history = readings_frame([("m1", T8 + Q - timedelta(weeks=2), 6.0, False, False)])
    assert codes_and_values(estimate(readings, history, CONFIG, DAY), T8 + Q, 1) == [
        ("estimated_history", 6.0)
    ]


def test_history_matches_local_time_across_a_dst_change() -> None:
    # Tuesday 2024-04-02 (CEST, UTC+2); the Tuesday before was CET (UTC+1). 10:00 local is
    # 08:00 UTC on the day and 09:00 UTC a week earlier.
    day = date(2024, 4, 2)
    start, _ = local_day_bounds(day, "Europe/Berlin")
    kws: list[float | None] = [1.0] * 96
    kws[40:48] = [None] * 8  # 10:00-11:45 local
    history = readings_frame(
        [
            ("m1", utc(2024, 3, 26, 9, 0), 7.0, False, False),  # 10:00 CET
            ("m1", utc(2024, 3, 26, 8, 0), 1.5, False, False),  # 09:00 CET
        ]
    )
    estimated = estimate(readings_frame(series("m1", start, kws)), history, BERLIN, day)
    assert codes_and_values(estimated, utc(2024, 4, 2, 8, 0), 1) == [("estimated_history", 7.0)]


def test_history_is_per_meter() -> None:
    day_rows = series("m1", T12 - Q, [1.0]) + series("m2", T12 - Q, [1.0])
    estimated = estimate(readings_frame(day_rows), history_frame(), CONFIG, DAY)
    at_1215 = estimated.filter(pl.col("reading_ts") == T12 + Q).sort("meter_id")
    assert at_1215.select("meter_id", "quality_code", "value_kw").rows() == [
        ("m1", "missing", None),
        ("m2", "estimated_history", 9.0),
    ]


def test_empty_readings() -> None:
    assert_frame_equal(estimate(readings_frame([]), None, CONFIG, DAY), pl.DataFrame(schema=ESTIMATE_SCHEMA))
    assert_frame_equal(completeness(readings_frame([]), DAY, CONFIG), completeness_frame([]))
    empty = estimate(readings_frame([]), None, CONFIG, DAY)
    assert_frame_equal(completeness_from_estimate(empty, DAY, CONFIG), completeness_frame([]))


def test_history_that_shares_instants_with_the_readings_loses_to_them() -> None:
    """Where history repeats an instant the day sent, the day's value is used, once; history from
    other days is taken as it is."""
    day_rows = readings_frame(series("m1", MIDNIGHT, [1.0] * 8 + [None] * 2 + [4.0] * 86))
    stale = readings_frame(series("m1", MIDNIGHT, [9.0] * 10))  # the day's first instants again
    week_before = readings_frame(series("m1", MIDNIGHT - 7 * 96 * Q, [5.0] * 96))
    both = estimate(day_rows, pl.concat([week_before, stale]), CONFIG, DAY)
    assert_frame_equal(both, estimate(day_rows, week_before, CONFIG, DAY))
    assert both.height == 96
    assert codes_and_values(both, MIDNIGHT + 7 * Q, 4) == [
        ("actual", 1.0),
        ("estimated_linear", 2.0),
        ("estimated_linear", 3.0),
        ("actual", 4.0),
    ]


def test_neighbours_never_come_from_another_meter() -> None:
    """m1 ends its day on a gap and m2 starts its day on one: next to each other in the grid, the
    other meter's reading is no neighbour, so neither gap is interpolated."""
    last = utc(2024, 6, 3, 23, 30)
    rows = series("m1", last, [1.0]) + series("m2", MIDNIGHT + Q, [3.0])
    estimated = estimate(readings_frame(rows), None, CONFIG, DAY).filter(
        pl.col("reading_ts").is_in([MIDNIGHT, MIDNIGHT + Q, last, last + Q])
    )
    assert estimated.select("meter_id", "reading_ts", "quality_code", "value_kw").rows() == [
        ("m1", MIDNIGHT, "missing", None),
        ("m1", MIDNIGHT + Q, "missing", None),
        ("m1", last, "actual", 1.0),
        ("m1", last + Q, "missing", None),
        ("m2", MIDNIGHT, "missing", None),
        ("m2", MIDNIGHT + Q, "actual", 3.0),
        ("m2", last, "missing", None),
        ("m2", last + Q, "missing", None),
    ]


def test_off_grid_readings_and_other_meters_history_are_not_placed() -> None:
    """A reading off the interval grid (08:07) fills no interval and anchors nothing; history of a
    meter that sent nothing today adds no rows."""
    rows = [("m1", T8, 1.0, False, False), ("m1", T8 + Q + timedelta(minutes=7), 9.0, False, False)]
    rows += series("m1", T8 + 3 * Q, [4.0])
    history = readings_frame(series("m9", T8 - 7 * 96 * Q, [5.0] * 4))
    estimated = estimate(readings_frame(rows), history, CONFIG, DAY)
    assert estimated.height == 96
    assert estimated.get_column("meter_id").unique().to_list() == ["m1"]
    assert codes_and_values(estimated, T8, 4) == [
        ("actual", 1.0),
        ("estimated_linear", 2.0),
        ("estimated_linear", 3.0),
        ("actual", 4.0),
    ]


# --- the history a day needs --------------------------------------------------------------------


def local_days(meter_id: str, days: list[date], config: RulesConfig, kw_of_day) -> list[tuple]:
    """Every interval of each local day, at a value that tells the days apart."""
    rows = []
    for d in days:
        start, end = local_day_bounds(d, config.timezone)
        rows += series(meter_id, start, [kw_of_day(d)] * ((end - start) // Q))
    return rows


@pytest.mark.parametrize(
    ("config", "day"),
    [
        (CONFIG, DAY),
        (BERLIN, DAY),
        (BERLIN, AUTUMN),
        (RulesConfig(history_weeks=2, short_gap_minutes=30), DAY),
    ],
    ids=["utc", "berlin", "berlin_dst_day", "two_weeks_short_reach"],
)
def test_history_window_keeps_all_the_history_an_estimate_uses(config: RulesConfig, day: date) -> None:
    start, end = local_day_bounds(day, config.timezone)
    intervals = (end - start) // Q
    # m1: a short gap at the start of the day (its left neighbour is the previous day's last
    # reading) and a long one at noon (the earlier weeks); m2 sent nothing but missing rows.
    kws: list[float | None] = [None, None] + [1.0] * (intervals - 2)
    kws[48:56] = [None] * 8
    readings = readings_frame(series("m1", start, kws) + series("m2", start, [None] * intervals))
    earlier = [day - timedelta(days=k) for k in range(1, 36)]
    history = readings_frame(
        local_days("m1", earlier, config, lambda d: (day - d).days / 7)
        + local_days("m2", earlier, config, lambda d: (day - d).days)
    )
    window = history.filter(history_window(day, config))

    full, windowed = estimate(readings, history, config, day), estimate(readings, window, config, day)
    assert_frame_equal(windowed, full, check_exact=True)
    # The estimates did use both parts of the window.
    codes = full.group_by("meter_id", "quality_code").len().sort("meter_id", "quality_code").rows()
    assert codes == [
        ("m1", "actual", intervals - 10),
        ("m1", "estimated_history", 8),
        ("m1", "estimated_linear", 2),
        ("m2", "estimated_history", intervals),
    ]
    # Kept: per meter, the previous local day's intervals within a short gap's reach of midnight,
    # and every interval of the same weekday in the earlier weeks (not the other days).
    reach = config.short_gap_minutes // config.interval_minutes + 1
    weeks = [day - timedelta(weeks=k) for k in range(1, config.history_weeks + 1)]
    per_week = sum((lambda b: (b[1] - b[0]) // Q)(local_day_bounds(w, config.timezone)) for w in weeks)
    assert window.group_by("meter_id").len().sort("meter_id").rows() == [
        ("m1", reach + per_week),
        ("m2", reach + per_week),
    ]


@pytest.mark.parametrize(
    ("timezone", "day", "local_day"),
    [
        ("UTC", date(2024, 3, 4), date(2024, 3, 4)),
        ("Europe/Berlin", date(2024, 1, 15), date(2024, 1, 15)),
        ("Europe/Berlin", date(2024, 7, 15), date(2024, 7, 15)),
        ("Asia/Kolkata", date(2024, 7, 15), date(2024, 7, 15)),
        ("Pacific/Kiritimati", date(2024, 7, 15), date(2024, 7, 15)),
        ("America/New_York", date(2024, 1, 15), date(2024, 1, 14)),
        ("America/New_York", date(2024, 7, 15), date(2024, 7, 14)),
        # Standard time UTC-1, summer time UTC+0: the standard offset decides, all year.
        ("Atlantic/Azores", date(2024, 1, 15), date(2024, 1, 14)),
        ("Atlantic/Azores", date(2024, 7, 15), date(2024, 7, 14)),
        ("Pacific/Pago_Pago", date(2024, 7, 15), date(2024, 7, 14)),
    ],
)
def test_the_local_day_a_partition_reports(timezone: str, day: date, local_day: date) -> None:
    assert vee.partition_local_day(day, timezone) == local_day


@pytest.mark.parametrize(
    "timezone",
    ["UTC", "Europe/Berlin", "Europe/London", "America/New_York", "Atlantic/Azores", "Australia/Sydney"],
)
def test_every_local_day_is_reported_once_and_only_once_it_has_ended(timezone: str) -> None:
    """Over a year with both daylight-saving changes: consecutive partitions report consecutive
    local days, each ending by the end of its partition's UTC day."""
    days = [date(2024, 1, 1) + timedelta(days=i) for i in range(366)]
    local = [vee.partition_local_day(d, timezone) for d in days]
    assert all(b - a == timedelta(days=1) for a, b in zip(local, local[1:], strict=False))
    for day, local_day in zip(days, local, strict=True):
        _, end = vee.local_day_bounds(local_day, timezone)
        assert end <= datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)


def test_the_days_whose_archives_the_estimate_reads() -> None:
    day = date(2024, 3, 12)
    utc = vee.history_days(day, RulesConfig())
    # The previous day (a short gap's reach) and the same weekday of the four weeks before.
    assert utc == [
        date(2024, 3, 11),
        date(2024, 3, 5),
        date(2024, 2, 27),
        date(2024, 2, 20),
        date(2024, 2, 13),
    ]
    # New York: the partition reports Monday 11 (local), 05:00 (04:00 from the 10th's DST
    # change) UTC on the 11th to 04:00 on the 12th: the 11th, and each earlier Monday's two UTC days.
    new_york = vee.history_days(day, RulesConfig(timezone="America/New_York", history_weeks=2))
    assert new_york == [
        date(2024, 3, 11),
        date(2024, 3, 5),
        date(2024, 3, 4),
        date(2024, 2, 27),
        date(2024, 2, 26),
    ]


def test_the_coded_estimate_is_the_estimate_with_its_codes_as_an_enum() -> None:
    at = datetime.combine(DAY, datetime.min.time(), UTC)
    readings = readings_frame(
        [
            ("m1", at, 1.0, False, False),
            ("m1", at + timedelta(hours=1), 3.0, False, False),
            ("m2", at + timedelta(hours=5), None, True, False),
        ]
    )
    config = RulesConfig(timezone="UTC")
    coded = vee.estimate_coded(readings, None, config, DAY)
    text = vee.estimate(readings, None, config, DAY)
    assert coded.schema == pl.Schema(vee.ESTIMATE_CODED_SCHEMA)
    assert text.schema == pl.Schema(vee.ESTIMATE_SCHEMA)
    assert_frame_equal(coded.with_columns(pl.col("quality_code").cast(pl.String)), text)
    assert set(text.get_column("quality_code")) == {"actual", "estimated_linear", "missing"}
