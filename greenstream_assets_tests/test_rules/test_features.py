"""Hourly per-meter features: kWh, peak, estimated share, calendar flags, previous day and week."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from greenstream_assets.rules.config import RulesConfig
from greenstream_assets.rules.features import HOURLY_FEATURES_SCHEMA, hourly_features
from greenstream_assets.rules.vee import ESTIMATE_SCHEMA, estimate, local_day_bounds

from .helpers import DAY, readings_frame, utc

CONFIG = RulesConfig()
BERLIN = RulesConfig(timezone="Europe/Berlin")
Q = timedelta(minutes=15)
T8 = utc(2024, 6, 3, 8, 0)  # a Monday


def grid(meter_id: str, start: datetime, codes_and_kw: list[tuple[str, float | None]]) -> list[tuple]:
    """VEE rows every 15 minutes from ``start``; the value goes to energy_kw or estimated_kw by code."""
    rows = []
    for i, (code, kw) in enumerate(codes_and_kw):
        estimated = code.startswith("estimated_")
        rows.append((meter_id, start + i * Q, None if estimated else kw, kw if estimated else None, kw, code))
    return rows


def vee_frame(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=ESTIMATE_SCHEMA, orient="row")


def actual_hours(meter_id: str, start: datetime, kws: list[float]) -> list[tuple]:
    """Whole hours of actual readings, each hour's four intervals at that hour's kW."""
    return grid(meter_id, start, [("actual", kw) for kw in kws for _ in range(4)])


def test_defaults() -> None:
    assert CONFIG.holidays == ()


def test_one_hour_of_mixed_quality() -> None:
    rows = grid(
        "m1",
        T8,
        [("actual", 2.0), ("estimated_linear", 3.0), ("anomaly", 150.0), ("faulty", 0.0)]
        + [("missing", None)] * 4,
    )
    expected = pl.DataFrame(
        [
            ("m1", T8, DAY, 8, 1, False, False, 1.25, 3.0, 0.25, 0.25, None, None),
            ("m1", T8 + 4 * Q, DAY, 9, 1, False, False, None, None, 0.0, 1.0, None, None),
        ],
        schema=HOURLY_FEATURES_SCHEMA,
        orient="row",
    )
    assert_frame_equal(hourly_features(vee_frame(rows), None, CONFIG), expected, check_exact=True)


@pytest.mark.parametrize(
    ("codes_and_kw", "kwh", "peak_kw", "estimated_share", "missing_share"),
    [
        pytest.param([("actual", 1.0)] * 4, 1.0, 1.0, 0.0, 0.0, id="all_actual"),
        pytest.param([("estimated_history", 4.0)] * 4, 4.0, 4.0, 1.0, 0.0, id="all_estimated"),
        pytest.param([("actual", 2.0)] * 2 + [("missing", None)] * 2, 1.0, 2.0, 0.0, 0.5, id="half_missing"),
        pytest.param([("anomaly", 500.0)] * 4, None, None, 0.0, 1.0, id="all_anomaly"),
        pytest.param([("actual", 0.1), ("actual", 0.2), ("actual", 0.3)], 0.15, 0.3, 0.0, 0.0, id="rounded"),
    ],
)
def test_hour_values(
    codes_and_kw: list[tuple[str, float | None]],
    kwh: float | None,
    peak_kw: float | None,
    estimated_share: float,
    missing_share: float,
) -> None:
    features = hourly_features(vee_frame(grid("m1", T8, codes_and_kw)), None, CONFIG)
    assert features.select("kwh", "peak_kw", "estimated_share", "missing_share").rows() == [
        (kwh, peak_kw, estimated_share, missing_share)
    ]


@pytest.mark.parametrize(
    ("day", "weekday", "weekend", "holidays", "holiday"),
    [
        (date(2024, 6, 3), 1, False, (), False),
        (date(2024, 6, 7), 5, False, (), False),
        (date(2024, 6, 8), 6, True, (), False),
        (date(2024, 6, 9), 7, True, (date(2024, 6, 9),), True),
        (date(2024, 12, 25), 3, False, (date(2024, 12, 25), date(2024, 12, 26)), True),
        (date(2024, 12, 24), 2, False, (date(2024, 12, 25), date(2024, 12, 26)), False),
    ],
)
def test_calendar_flags(
    day: date, weekday: int, weekend: bool, holidays: tuple[date, ...], holiday: bool
) -> None:
    start = utc(day.year, day.month, day.day, 10)
    features = hourly_features(
        vee_frame(actual_hours("m1", start, [1.0])), None, RulesConfig(holidays=holidays)
    )
    assert features.select("local_date", "weekday", "is_weekend", "is_holiday").row(0) == (
        day,
        weekday,
        weekend,
        holiday,
    )


def test_local_hour_and_date_in_the_configured_zone() -> None:
    # 22:00 UTC on Sunday 2024-06-02 is 00:00 on Monday 2024-06-03 in Berlin.
    features = hourly_features(vee_frame(actual_hours("m1", utc(2024, 6, 2, 22), [1.0])), None, BERLIN)
    assert features.select("hour_start_utc", "local_date", "local_hour", "weekday").row(0) == (
        utc(2024, 6, 2, 22),
        DAY,
        0,
        1,
    )


def test_hours_follow_local_clock_in_a_half_hour_zone() -> None:
    # Kolkata is UTC+05:30: a local hour starts at half past a UTC hour.
    rows = grid("m1", utc(2024, 6, 3, 8, 0), [("actual", 1.0)] * 4)  # 13:30-14:15 local
    features = hourly_features(vee_frame(rows), None, RulesConfig(timezone="Asia/Kolkata"))
    assert features.select("hour_start_utc", "local_hour", "kwh").rows() == [
        (utc(2024, 6, 3, 7, 30), 13, 0.5),
        (utc(2024, 6, 3, 8, 30), 14, 0.5),
    ]


@pytest.mark.parametrize(
    ("day", "hours", "local_hours"),
    [
        (date(2024, 3, 31), 23, [0, 1, *range(3, 24)]),
        (date(2024, 10, 27), 25, [0, 1, 2, 2, *range(3, 24)]),
        (date(2024, 6, 3), 24, list(range(24))),
    ],
)
def test_dst_days_have_23_or_25_hours(day: date, hours: int, local_hours: list[int]) -> None:
    start, end = local_day_bounds(day, "Europe/Berlin")
    intervals = int((end - start) / Q)
    features = hourly_features(vee_frame(grid("m1", start, [("actual", 1.0)] * intervals)), None, BERLIN)
    assert features.height == hours
    assert features.get_column("local_hour").to_list() == local_hours
    assert features.get_column("kwh").to_list() == [1.0] * hours
    assert features.get_column("local_date").unique().to_list() == [day]


# --- previous day and week ----------------------------------------------------------------------


def history_rows(rows: list[tuple[str, date, int, float | None]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={"meter_id": pl.String, "local_date": pl.Date, "local_hour": pl.Int8, "kwh": pl.Float64},
        orient="row",
    )


def test_previous_day_and_week_same_hour() -> None:
    history = history_rows(
        [
            ("m1", date(2024, 6, 2), 8, 3.0),  # previous day, same hour
            ("m1", date(2024, 6, 2), 9, 4.0),
            ("m1", date(2024, 5, 27), 8, 5.0),  # previous week, same hour
            ("m1", date(2024, 5, 28), 8, 99.0),  # six days back: neither
            ("m2", date(2024, 6, 2), 8, 7.0),  # another meter
        ]
    )
    features = hourly_features(vee_frame(actual_hours("m1", T8, [1.0, 2.0])), history, CONFIG)
    assert features.select(
        "local_hour", "kwh", "prev_day_same_hour_kwh", "prev_week_same_hour_kwh"
    ).rows() == [
        (8, 1.0, 3.0, 5.0),
        (9, 2.0, 4.0, None),
    ]


def test_previous_day_from_the_rows_being_built() -> None:
    rows = actual_hours("m1", utc(2024, 6, 2, 8), [6.0]) + actual_hours("m1", T8, [1.0])
    stale = history_rows([("m1", date(2024, 6, 2), 8, 100.0)])  # superseded by the rows built
    features = hourly_features(vee_frame(rows), stale, CONFIG)
    assert features.select("local_date", "prev_day_same_hour_kwh").rows() == [
        (date(2024, 6, 2), None),
        (DAY, 6.0),
    ]


def test_previous_day_across_dst() -> None:
    # The day after Berlin's fall-back: hour 2 of 2024-10-27 occurred twice (kWh 2 and 4).
    history = history_rows(
        [
            ("m1", date(2024, 10, 27), 2, 2.0),
            ("m1", date(2024, 10, 27), 2, 4.0),
            ("m1", date(2024, 10, 27), 3, 5.0),
        ]
    )
    start = utc(2024, 10, 28, 1)  # 02:00 CET on 2024-10-28
    features = hourly_features(vee_frame(actual_hours("m1", start, [1.0, 1.0])), history, BERLIN)
    assert features.select("local_hour", "prev_day_same_hour_kwh").rows() == [(2, 3.0), (3, 5.0)]
    # The day after the spring-forward day: 02:00 did not exist on 2024-03-31.
    spring = hourly_features(vee_frame(actual_hours("m1", utc(2024, 4, 1, 0), [1.0])), history, BERLIN)
    assert spring.select("local_hour", "prev_day_same_hour_kwh").row(0) == (2, None)


def test_features_from_vee_estimate() -> None:
    readings = readings_frame([("m1", T8, 1.0, False, False), ("m1", T8 + 2 * Q, 3.0, False, False)])
    features = hourly_features(estimate(readings, None, CONFIG, DAY), None, CONFIG)
    assert features.height == 24
    at_8 = features.filter(pl.col("local_hour") == 8)
    # 1.0, 2.0 (interpolated), 3.0, missing.
    assert at_8.select("kwh", "peak_kw", "estimated_share", "missing_share").row(0) == (1.5, 3.0, 0.25, 0.25)


def test_schema_and_empty_input() -> None:
    features = hourly_features(vee_frame([]), None, CONFIG)
    assert features.schema == pl.Schema(HOURLY_FEATURES_SCHEMA)
    assert features.height == 0


@pytest.mark.parametrize("order", ["meter_then_time", "shuffled", "time_then_meter"])
def test_row_order_does_not_change_the_features(order: str) -> None:
    """VEE's grid comes in (meter, time) order and is grouped by runs of rows; any other order is
    grouped by key, with the same result. m2's hour 8 sits between two of m1's hours."""
    rows = grid("m1", T8, [("actual", 1.0)] * 4 + [("missing", None)] * 2 + [("estimated_linear", 3.0)] * 2)
    rows += grid("m2", T8, [("actual", 5.0), ("anomaly", 99.0), ("actual", 7.0), ("actual", 9.0)])
    frame = vee_frame(rows)
    if order == "shuffled":
        frame = frame.sample(fraction=1.0, shuffle=True, seed=3)
    elif order == "time_then_meter":
        frame = frame.sort("reading_ts", "meter_id")
    features = hourly_features(frame, None, CONFIG)
    assert features.select(
        "meter_id", "local_hour", "kwh", "peak_kw", "estimated_share", "missing_share"
    ).rows() == [
        ("m1", 8, 1.0, 1.0, 0.0, 0.0),
        ("m1", 9, 1.5, 3.0, 0.5, 0.5),
        ("m2", 8, 5.25, 9.0, 0.0, 0.25),
    ]


def _days_of(meters: list[str], day: date, base: float) -> pl.DataFrame:
    """Whole-day features of ``meters`` on ``day``: hour h of the k-th meter has kW base + k + h/100."""
    rows = []
    for k, meter in enumerate(meters):
        rows += actual_hours(
            meter, utc(day.year, day.month, day.day), [base + k + h / 100 for h in range(24)]
        )
    return hourly_features(vee_frame(rows), None, CONFIG)


@pytest.mark.parametrize(
    "history_meters",
    [
        pytest.param(["a", "b", "c"], id="same_meters_in_order"),
        pytest.param(["a", "c"], id="a_meter_missing"),
        pytest.param(["a", "b", "c", "d"], id="an_extra_meter"),
        pytest.param(["b", "a", "c"], id="another_order"),
        pytest.param(["a", "b", "d"], id="as_many_rows_of_another_meter"),
    ],
)
def test_previous_day_and_week_whatever_the_history_holds(history_meters: list[str]) -> None:
    day = date(2024, 6, 10)
    history = pl.concat(
        [
            _days_of(history_meters, day - timedelta(days=1), 10.0),
            _days_of(history_meters, day - timedelta(days=7), 20.0),
        ]
    )
    meters = ["a", "b", "c"]
    today = _days_of(meters, day, 0.0).select("meter_id", "local_hour")
    built = hourly_features(
        vee_frame(
            [
                row
                for k, meter in enumerate(meters)
                for row in actual_hours(meter, utc(2024, 6, 10), [float(k)] * 24)
            ]
        ),
        history,
        CONFIG,
    )
    assert built.select("meter_id", "local_hour").equals(today)

    # What each meter's history holds, at its own k in history_meters; null for a meter it lacks.
    def held(base: float, meter: str, hour: int) -> float | None:
        return round(base + history_meters.index(meter) + hour / 100, 6) if meter in history_meters else None

    got = built.select(
        "meter_id",
        "local_hour",
        pl.col("prev_day_same_hour_kwh").round(6),
        pl.col("prev_week_same_hour_kwh").round(6),
    ).rows()
    assert got == [(m, h, held(10.0, m, h), held(20.0, m, h)) for m in meters for h in range(24)]
