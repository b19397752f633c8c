"""Rule 5: a meter stuck at or near zero for at least six hours is faulty."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from greenstream_assets.rules.config import RulesConfig
from greenstream_assets.rules.faulty import FAULTY_PERIOD_SCHEMA, flag_faulty
from greenstream_assets.rules.flagging import flag_readings
from greenstream_assets.rules.validation import validate_readings

from .helpers import DAY, raw_frame, readings_frame, series_of, utc

CONFIG = RulesConfig()
START = utc(2024, 6, 3, 0, 0)
Q = timedelta(minutes=15)


def periods_frame(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=FAULTY_PERIOD_SCHEMA, orient="row")


def faulty_flags(readings: pl.DataFrame, config: RulesConfig = CONFIG) -> tuple[list[bool], pl.DataFrame]:
    flagged, periods = flag_faulty(readings, config)
    # The input comes back unchanged, in order, with one column added.
    assert_frame_equal(flagged.drop("is_faulty"), readings)
    assert flagged.get_column("is_faulty").dtype == pl.Boolean
    return flagged.get_column("is_faulty").to_list(), periods


def test_defaults() -> None:
    assert (CONFIG.near_zero_kw, CONFIG.min_zero_hours) == (0.01, 6.0)


@pytest.mark.parametrize(
    ("count", "kw", "faulty"),
    [
        pytest.param(25, 0.0, True, id="exactly_6h_zero"),
        pytest.param(25, 0.01, True, id="exactly_6h_at_threshold"),
        pytest.param(25, 0.005, True, id="exactly_6h_near_zero"),
        pytest.param(24, 0.0, False, id="5h45m_zero"),
        pytest.param(24, 0.01, False, id="5h45m_at_threshold"),
        pytest.param(25, 0.0100001, False, id="6h_just_above_threshold"),
        pytest.param(40, 0.0, True, id="9h45m_zero"),
        pytest.param(1, 0.0, False, id="single_reading"),
    ],
)
def test_single_run(count: int, kw: float, faulty: bool) -> None:
    flags, periods = faulty_flags(readings_frame(series_of("m1", START, count, kw)))
    assert flags == [faulty] * count
    expected = [("m1", START, START + (count - 1) * Q, count)] if faulty else []
    assert_frame_equal(periods, periods_frame(expected))


def test_two_sparse_readings_six_hours_apart_are_a_run() -> None:
    readings = readings_frame(
        [("m1", START, 0.0, False, False), ("m1", START + timedelta(hours=6), 0.0, False, False)]
    )
    flags, periods = faulty_flags(readings)
    assert flags == [True, True]
    assert_frame_equal(periods, periods_frame([("m1", START, START + timedelta(hours=6), 2)]))


def test_reading_above_threshold_breaks_the_run() -> None:
    # 00:00-03:00 zero (13), 03:15 at 1 kW, 03:30-09:30 zero (25): only the second run is faulty.
    rows = (
        series_of("m1", START, 13)
        + [("m1", START + 13 * Q, 1.0, False, False)]
        + series_of("m1", START + 14 * Q, 25)
    )
    flags, periods = faulty_flags(readings_frame(rows))
    assert flags == [False] * 14 + [True] * 25
    assert_frame_equal(periods, periods_frame([("m1", START + 14 * Q, START + 38 * Q, 25)]))


def test_two_faulty_periods_on_one_meter() -> None:
    rows = (
        series_of("m1", START, 25)
        + [("m1", START + 25 * Q, 5.0, False, False)]
        + series_of("m1", START + 26 * Q, 30)
    )
    flags, periods = faulty_flags(readings_frame(rows))
    assert flags == [True] * 25 + [False] + [True] * 30
    assert_frame_equal(
        periods,
        periods_frame([("m1", START, START + 24 * Q, 25), ("m1", START + 26 * Q, START + 55 * Q, 30)]),
    )


def test_missing_inside_a_run_neither_breaks_it_nor_is_flagged() -> None:
    rows = series_of("m1", START, 25)
    rows[12] = ("m1", START + 12 * Q, None, True, False)  # 03:00 missing
    rows[13] = ("m1", START + 13 * Q, None, True, False)  # 03:15 missing
    flags, periods = faulty_flags(readings_frame(rows))
    assert flags == [True] * 12 + [False, False] + [True] * 11
    assert_frame_equal(periods, periods_frame([("m1", START, START + 24 * Q, 23)]))


def test_missing_at_the_edges_do_not_extend_a_run() -> None:
    # Missing at 00:00 and 06:00 around zeros from 00:15 to 05:45 (5.5h): not faulty.
    rows = (
        [("m1", START, None, True, False)]
        + series_of("m1", START + Q, 23)
        + [("m1", START + 24 * Q, None, True, False)]
    )
    flags, periods = faulty_flags(readings_frame(rows))
    assert flags == [False] * 25
    assert periods.height == 0


def test_all_missing_is_not_faulty() -> None:
    flags, periods = faulty_flags(readings_frame(series_of("m1", START, 30, None)))
    assert flags == [False] * 30
    assert periods.height == 0


def test_two_meters_independent() -> None:
    m1 = series_of("m1", START, 25)  # 6h: faulty
    m2 = series_of("m2", START, 24)  # 5h45: not faulty
    m3 = series_of("m3", START + timedelta(hours=1), 30, 0.002)  # 7h15: faulty
    rows = m1 + m2 + m3
    flags, periods = faulty_flags(readings_frame(rows))
    assert flags == [True] * 25 + [False] * 24 + [True] * 30
    assert_frame_equal(
        periods,
        periods_frame(
            [
                ("m1", START, START + 24 * Q, 25),
                ("m3", START + timedelta(hours=1), START + timedelta(hours=1) + 29 * Q, 30),
            ]
        ),
    )


def test_meter_boundary_does_not_join_runs() -> None:
    # m1 zero 03:00-06:00 and m2 zero 00:00-03:00: adjacent after sorting, but different meters.
    m1 = series_of("m1", START + timedelta(hours=3), 13)
    m2 = series_of("m2", START, 13)
    flags, periods = faulty_flags(readings_frame(m1 + m2))
    assert flags == [False] * 26
    assert periods.height == 0


def test_row_order_does_not_matter() -> None:
    rows = series_of("m1", START, 25) + series_of("m2", START, 25, 3.0)
    interleaved = [row for pair in zip(reversed(rows[:25]), rows[25:], strict=True) for row in pair]
    flags, periods = faulty_flags(readings_frame(interleaved))
    assert flags == [True, False] * 25
    assert_frame_equal(periods, periods_frame([("m1", START, START + 24 * Q, 25)]))


def test_anomalies_are_not_near_zero() -> None:
    # With a (silly) max below the near-zero threshold, near-zero readings that are anomalies
    # do not count.
    config = RulesConfig(max_kw=0.001)
    rows = [(m, ts, kw, miss, True) for m, ts, kw, miss, _ in series_of("m1", START, 25, 0.005)]
    flags, periods = faulty_flags(readings_frame(rows), config)
    assert flags == [False] * 25
    assert periods.height == 0


@pytest.mark.parametrize(("hours", "count", "faulty"), [(2.0, 9, True), (2.0, 8, False), (6.5, 26, False)])
def test_configurable_minimum(hours: float, count: int, faulty: bool) -> None:
    config = RulesConfig(min_zero_hours=hours)
    flags, periods = faulty_flags(readings_frame(series_of("m1", START, count)), config)
    assert flags == [faulty] * count
    assert periods.height == int(faulty)


def test_empty_readings() -> None:
    flags, periods = faulty_flags(readings_frame([]))
    assert flags == []
    assert_frame_equal(periods, periods_frame([]))


def test_periods_schema() -> None:
    _, periods = flag_faulty(readings_frame(series_of("m1", START, 25)), CONFIG)
    assert periods.schema == pl.Schema(FAULTY_PERIOD_SCHEMA)


def test_from_raw_rows_through_validation_and_flagging() -> None:
    # 10 W == 0.01 kW is at the threshold; a missing value at 02:00 and a 2 kW reading from m2.
    rows = []
    for i in range(25):
        ts = (START + i * Q).strftime("%Y-%m-%dT%H:%M:%SZ")
        rows.append(("m1", ts, "" if i == 8 else "10", "W"))
        rows.append(("m2", ts, "2", "kW"))
    validated = validate_readings(raw_frame(rows), CONFIG, DAY)
    assert validated.quarantined.height == 0
    flagged, periods = flag_readings(validated.cleansed, CONFIG)
    expected_m1 = [i != 8 for i in range(25)]
    assert flagged.filter(pl.col("meter_id") == "m1").get_column("is_faulty").to_list() == expected_m1
    assert not flagged.filter(pl.col("meter_id") == "m2").get_column("is_faulty").any()
    assert_frame_equal(periods, periods_frame([("m1", START, START + 24 * Q, 24)]))


# The previous day's readings (``earlier``): a run that began there goes on across midnight.
MIDNIGHT = START
EVENING = START - timedelta(hours=3)  # 21:00 the day before


@pytest.mark.parametrize(
    ("before", "today_zeros", "faulty", "period"),
    [
        # 21:00-23:45 (12 zeros) then 00:00-03:45 (16): 6h45 in all, the day's 16 readings faulty.
        pytest.param(12, 16, True, (EVENING, MIDNIGHT + 15 * Q, 28), id="run_across_midnight"),
        # 21:00-23:45 then 00:00-02:45: 5h45 in all, one interval short.
        pytest.param(12, 12, False, None, id="one_interval_short_across_midnight"),
        # 23:45 alone, then 00:00-05:45 (24): 6 hours from 23:45.
        pytest.param(1, 24, True, (MIDNIGHT - Q, MIDNIGHT + 23 * Q, 25), id="from_the_last_reading_before"),
    ],
)
def test_a_run_that_began_the_day_before_counts_from_its_start(
    before: int, today_zeros: int, faulty: bool, period: tuple | None
) -> None:
    earlier = readings_frame(
        series_of("m1", MIDNIGHT - timedelta(hours=24), 96 - before, 1.0)
        + series_of("m1", MIDNIGHT - before * Q, before, 0.0)
    )
    today = readings_frame(
        series_of("m1", MIDNIGHT, today_zeros, 0.0)
        + series_of("m1", MIDNIGHT + today_zeros * Q, 96 - today_zeros, 1.0)
    )
    flagged, periods = flag_faulty(today, CONFIG, earlier)
    assert flagged.get_column("is_faulty").to_list() == [faulty] * today_zeros + [False] * (96 - today_zeros)
    expected = [("m1", *period)] if period else []
    assert_frame_equal(periods, periods_frame(expected))
    # Without the day before, the day's own zeros are too short a run.
    assert not flag_faulty(today, CONFIG)[0].get_column("is_faulty").any()


def test_a_run_of_the_day_before_that_ended_there_is_not_the_days() -> None:
    # Seven zero hours the day before, a reading at 1 kW at 23:45, then nothing near zero today.
    earlier = readings_frame(
        series_of("m1", MIDNIGHT - timedelta(hours=8), 29, 0.0) + series_of("m1", MIDNIGHT - Q, 1, 1.0)
    )
    today = readings_frame(series_of("m1", MIDNIGHT, 4, 0.0) + series_of("m1", MIDNIGHT + 4 * Q, 4, 1.0))
    flagged, periods = flag_faulty(today, CONFIG, earlier)
    assert not flagged.get_column("is_faulty").any()
    assert periods.height == 0


def test_earlier_readings_of_meters_near_zero_only_elsewhere_change_nothing() -> None:
    # m2 was stuck the day before, but sends nothing near zero today; m1 is fine on both days.
    earlier = readings_frame(series_of("m2", EVENING, 12, 0.0) + series_of("m1", EVENING, 12, 2.0))
    today = readings_frame(series_of("m1", MIDNIGHT, 30, 0.0) + series_of("m2", MIDNIGHT, 4, 3.0))
    flagged, periods = flag_faulty(today, CONFIG, earlier)
    assert flagged.get_column("is_faulty").to_list() == [True] * 30 + [False] * 4
    assert_frame_equal(periods, periods_frame([("m1", MIDNIGHT, MIDNIGHT + 29 * Q, 30)]))
