"""Faulty-meter incidents: one per meter and stuck period across midnight, and a rerun-safe registry."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from greenstream_assets.rules.config import RulesConfig
from greenstream_assets.rules.faulty import flag_faulty
from greenstream_assets.rules.incidents import INCIDENT_SCHEMA, day_incidents, tail_of_stuck_meters

from .helpers import readings_frame, series_of, utc

CONFIG = RulesConfig()
Q = timedelta(minutes=15)
D1, D2, D3 = date(2024, 6, 3), date(2024, 6, 4), date(2024, 6, 5)
M1, M2, M3 = utc(2024, 6, 3), utc(2024, 6, 4), utc(2024, 6, 5)  # midnights
NO_READINGS = readings_frame([])


def day_of(meter_id: str, midnight: datetime, kws: list[float | None]) -> list[tuple]:
    """A meter's readings every 15 minutes from ``midnight`` (None = missing)."""
    return [(meter_id, midnight + i * Q, kw, kw is None, False) for i, kw in enumerate(kws)]


def incidents_frame(rows: list[tuple]) -> pl.DataFrame:
    """(meter_id, start_ts, end_ts, last_zero_ts, duration_hours, status, readings)."""
    return pl.DataFrame(rows, schema=INCIDENT_SCHEMA, orient="row")


def incidents(
    tail: list[tuple], today: list[tuple], previous_open: pl.DataFrame | None = None
) -> pl.DataFrame:
    return day_incidents(readings_frame(tail), readings_frame(today), CONFIG, previous_open)


# Zero from 20:00 on D1 (3h45, not yet faulty) to 04:45 on D2, then 2 kW.
CROSSING_D1 = day_of("m1", M1, [1.0] * 80 + [0.0] * 16)
CROSSING_D2 = day_of("m1", M2, [0.0] * 20 + [2.0] * 76)
# Zero from 12:00 on D1 to the end of D1 (open), all of D2 (open), D3 until 02:00.
LONG_D1 = day_of("m1", M1, [1.0] * 48 + [0.0] * 48)
LONG_D2 = day_of("m1", M2, [0.0] * 96)
LONG_D3 = day_of("m1", M3, [0.0] * 9 + [3.0] * 87)


def test_zero_run_across_midnight_is_one_incident() -> None:
    assert incidents([], CROSSING_D1).height == 0
    expected = incidents_frame([("m1", M1 + 80 * Q, M2 + 19 * Q, M2 + 19 * Q, 8.75, "closed", 36)])
    assert_frame_equal(incidents(CROSSING_D1, CROSSING_D2), expected, check_exact=True)


def test_without_the_tail_the_day_sees_only_its_part() -> None:
    # 00:00-04:45 alone is 4h45: not an incident, which is why the tail is needed.
    assert incidents([], CROSSING_D2).height == 0


def test_open_incident_continues_and_closes() -> None:
    open_d1 = incidents_frame([("m1", M1 + 48 * Q, None, M1 + 95 * Q, 11.75, "open", 48)])
    d1 = incidents([], LONG_D1)
    assert_frame_equal(d1, open_d1, check_exact=True)

    open_d2 = incidents_frame([("m1", M1 + 48 * Q, None, M2 + 95 * Q, 35.75, "open", 144)])
    d2 = incidents(LONG_D1, LONG_D2, d1)
    assert_frame_equal(d2, open_d2, check_exact=True)

    # The D2 tail is zero back to its start: the true start comes from D2's open incident.
    closed_d3 = incidents_frame([("m1", M1 + 48 * Q, M3 + 8 * Q, M3 + 8 * Q, 38.0, "closed", 153)])
    assert_frame_equal(incidents(LONG_D2, LONG_D3, d2), closed_d3, check_exact=True)


def test_all_zero_tail_without_previous_incidents_starts_at_the_tail() -> None:
    expected = incidents_frame([("m1", M2, M3 + 8 * Q, M3 + 8 * Q, 26.0, "closed", 105)])
    assert_frame_equal(incidents(LONG_D2, LONG_D3), expected, check_exact=True)


def test_previous_open_incident_found_in_the_tail_counts_readings_once() -> None:
    # D2 with D1 as the tail and D1's open incident: start and readings agree either way.
    with_previous = incidents(LONG_D1, LONG_D2, incidents([], LONG_D1))
    assert_frame_equal(with_previous, incidents(LONG_D1, LONG_D2), check_exact=True)


def test_open_incident_closed_by_the_first_reading_of_the_day() -> None:
    d2 = day_of("m1", M2, [2.0] * 96)
    expected = incidents_frame([("m1", M1 + 48 * Q, M1 + 95 * Q, M1 + 95 * Q, 11.75, "closed", 48)])
    assert_frame_equal(incidents(LONG_D1, d2, incidents([], LONG_D1)), expected, check_exact=True)


def test_incident_closed_within_the_tail_is_not_repeated() -> None:
    d1 = day_of("m1", M1, [0.0] * 25 + [1.0] * 71)
    assert incidents([], d1).get_column("status").to_list() == ["closed"]
    assert incidents(d1, day_of("m1", M2, [1.0] * 96)).height == 0


def test_meter_silent_the_next_day_stays_open() -> None:
    silent = day_of("m1", M2, [None] * 96)
    expected = incidents_frame([("m1", M1 + 48 * Q, None, M1 + 95 * Q, 11.75, "open", 48)])
    assert_frame_equal(incidents(LONG_D1, silent), expected, check_exact=True)
    assert_frame_equal(incidents(LONG_D1, []), expected, check_exact=True)


@pytest.mark.parametrize("d2", [day_of("m1", M2, [None] * 96), []], ids=["all missing", "no rows"])
def test_open_incident_closed_after_a_day_without_readings(d2: list[tuple]) -> None:
    # Open at the end of D1; on D2 the meter sends only missing values (or nothing), so D3's tail
    # (the stuck meters' rows of D2) holds none of its rows; D3 it recovers.
    d1 = incidents([], LONG_D1)
    open_d1 = incidents_frame([("m1", M1 + 48 * Q, None, M1 + 95 * Q, 11.75, "open", 48)])
    still_open = incidents(LONG_D1, d2, d1)
    assert_frame_equal(still_open, open_d1, check_exact=True)
    closed = incidents_frame([("m1", M1 + 48 * Q, M1 + 95 * Q, M1 + 95 * Q, 11.75, "closed", 48)])
    recovered_d3 = day_of("m1", M3, [2.0] * 96)
    assert_frame_equal(incidents([], recovered_d3, still_open), closed, check_exact=True)
    assert_frame_equal(incidents(d2, recovered_d3, still_open), closed, check_exact=True)
    # Another day without readings: still open, as it was.
    assert_frame_equal(incidents([], day_of("m1", M3, [None] * 96), still_open), open_d1, check_exact=True)


def test_open_incident_continued_after_a_day_without_readings() -> None:
    # Zero again on D3 after a D2 of missing values: the same incident goes on, its readings added.
    d1 = incidents([], LONG_D1)
    d2 = incidents([], day_of("m1", M2, [None] * 96), d1)
    d3 = day_of("m1", M3, [0.0] * 4 + [2.0] * 92)
    expected = incidents_frame([("m1", M1 + 48 * Q, M3 + 3 * Q, M3 + 3 * Q, 36.75, "closed", 52)])
    assert_frame_equal(incidents([], d3, d2), expected, check_exact=True)


def test_missing_readings_across_midnight_do_not_break_the_run() -> None:
    d1 = day_of("m1", M1, [1.0] * 80 + [0.0] * 15 + [None])  # 20:00-23:30 zero, 23:45 missing
    d2 = day_of("m1", M2, [None] + [0.0] * 12 + [1.0] * 83)  # 00:00 missing, 00:15-03:00 zero
    expected = incidents_frame([("m1", M1 + 80 * Q, M2 + 12 * Q, M2 + 12 * Q, 7.0, "closed", 27)])
    assert_frame_equal(incidents(d1, d2), expected, check_exact=True)


def test_trailing_missing_readings_keep_an_incident_open() -> None:
    d1 = day_of("m1", M1, [0.0] * 30 + [None] * 66)
    expected = incidents_frame([("m1", M1, None, M1 + 29 * Q, 7.25, "open", 30)])
    assert_frame_equal(incidents([], d1), expected, check_exact=True)


def test_anomaly_breaks_a_run_across_midnight() -> None:
    config = RulesConfig(max_kw=0.001)  # near-zero readings of 0.005 kW are anomalies here
    d1 = day_of("m1", M1, [1.0] * 80 + [0.0] * 16)
    d2 = [("m1", M2, 0.005, False, True), *day_of("m1", M2 + Q, [0.0] * 20 + [1.0] * 75)]
    found = day_incidents(readings_frame(d1), readings_frame(d2), config)
    # 20:00-23:45 (3h45) ends at the anomaly; 00:15-05:00 is 4h45: neither is faulty.
    assert found.height == 0


@pytest.mark.parametrize(
    ("zeros_d1", "zeros_d2", "found"),
    [
        pytest.param(12, 13, True, id="exactly_6h_across_midnight"),
        pytest.param(12, 12, False, id="5h45_across_midnight"),
        pytest.param(1, 24, True, id="one_reading_before_midnight"),
        pytest.param(0, 24, False, id="5h45_after_midnight"),
    ],
)
def test_minimum_duration_counts_across_midnight(zeros_d1: int, zeros_d2: int, found: bool) -> None:
    d1 = day_of("m1", M1, [1.0] * (96 - zeros_d1) + [0.0] * zeros_d1)
    d2 = day_of("m1", M2, [0.0] * zeros_d2 + [1.0] * (96 - zeros_d2))
    assert incidents(d1, d2).height == int(found)


@pytest.mark.parametrize(("hours", "found"), [(2.0, True), (8.75, True), (9.0, False)])
def test_configurable_minimum(hours: float, found: bool) -> None:
    config = RulesConfig(min_zero_hours=hours)
    result = day_incidents(readings_frame(CROSSING_D1), readings_frame(CROSSING_D2), config)
    assert result.height == int(found)


def test_meters_are_independent() -> None:
    tail = CROSSING_D1 + day_of("m2", M1, [0.0] * 96)
    today = CROSSING_D2 + day_of("m2", M2, [4.0] * 96) + day_of("m3", M2, [5.0] * 40 + [0.0] * 56)
    expected = incidents_frame(
        [
            ("m1", M1 + 80 * Q, M2 + 19 * Q, M2 + 19 * Q, 8.75, "closed", 36),
            ("m2", M1, M1 + 95 * Q, M1 + 95 * Q, 23.75, "closed", 96),
            ("m3", M2 + 40 * Q, None, M2 + 95 * Q, 13.75, "open", 56),
        ]
    )
    assert_frame_equal(incidents(tail, today), expected, check_exact=True)


def test_rows_in_both_tail_and_day_count_once() -> None:
    assert_frame_equal(incidents(CROSSING_D1 + CROSSING_D2, CROSSING_D2), incidents(CROSSING_D1, CROSSING_D2))


def test_row_order_does_not_matter() -> None:
    forward = incidents(CROSSING_D1, CROSSING_D2)
    assert_frame_equal(incidents(list(reversed(CROSSING_D1)), list(reversed(CROSSING_D2))), forward)


@pytest.mark.parametrize(
    "rows",
    [
        pytest.param(series_of("m1", M1, 25), id="one_period"),
        pytest.param(
            series_of("m1", M1, 30) + series_of("m1", M1 + 30 * Q, 1, 5.0) + series_of("m1", M1 + 31 * Q, 40),
            id="two_periods",
        ),
        pytest.param(series_of("m1", M1, 24), id="too_short"),
    ],
)
def test_same_periods_as_rule_5_within_a_day(rows: list[tuple]) -> None:
    _, periods = flag_faulty(readings_frame(rows), CONFIG)
    found = incidents([], rows).select("meter_id", "start_ts", end_ts="last_zero_ts", readings="readings")
    assert_frame_equal(found, periods)


def _tail_cases() -> tuple[list[tuple], list[tuple], list[tuple]]:
    """D1 and D2 of meters whose tail matters in each way it can, and of meters whose tail does not."""
    d0 = [
        *day_of("open", M1 - timedelta(days=1), [1.0] * 48 + [0.0] * 48),  # open at D0's end...
    ]
    d1 = [
        *CROSSING_D1,  # m1: a run across midnight
        *day_of("open", M1, [None] * 96),  # ...and silent all of D1: still open
        *day_of("late", M1, [1.0] * 40 + [0.0] + [None] * 55),  # one zero, then nothing until D2
        *day_of("above", M1, [1.0] * 96),  # never near zero on D1, stuck on D2
        *day_of("spike", M1, [1.0] * 95 + [500.0]),  # an anomaly is not near zero
        *day_of("busy", M1, [2.0] * 96),  # never near zero
        *day_of("gone", M1, [0.0] * 30 + [None] * 66),  # stuck, then silent on D2
    ]
    d2 = [
        *CROSSING_D2,
        *day_of("open", M2, [0.0] * 10 + [1.0] * 86),
        *day_of("late", M2, [0.0] * 30 + [1.0] * 66),
        *day_of("above", M2, [0.0] * 30 + [1.0] * 66),
        *day_of("spike", M2, [0.0] * 30 + [1.0] * 66),
        *day_of("busy", M2, [2.0] * 96),
    ]
    return d0, d1, d2


def test_the_tail_of_stuck_meters_gives_the_same_incidents_as_the_whole_day() -> None:
    config = RulesConfig(max_kw=100.0)
    d0, d1, d2 = _tail_cases()
    open_d1 = day_incidents(readings_frame([]), readings_frame(d0 + d1), config)
    whole = readings_frame(d1)
    tail = tail_of_stuck_meters(whole.lazy(), config)
    # Only the meters with a near-zero reading sent on D1, with all their D1 rows.
    assert sorted(tail.get_column("meter_id").unique().to_list()) == ["gone", "late", "m1"]
    assert tail.height == 96 * 3
    expected = day_incidents(whole, readings_frame(d2), config, open_d1)
    assert sorted(expected.get_column("meter_id").to_list()) == [
        "above",
        "gone",
        "late",
        "m1",
        "open",
        "spike",
    ]
    assert_frame_equal(day_incidents(tail, readings_frame(d2), config, open_d1), expected, check_exact=True)


def test_empty_inputs() -> None:
    assert_frame_equal(day_incidents(NO_READINGS, NO_READINGS, CONFIG), incidents_frame([]))


# --- registry -----------------------------------------------------------------------------------
