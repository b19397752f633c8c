"""Report rules: anomalies (rule 4) and the day's system-wide peak of total demand."""

from __future__ import annotations

from datetime import date, datetime

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from greenstream_assets.rules.config import RulesConfig
from greenstream_assets.rules.flagging import flag_readings
from greenstream_assets.rules.ranges import is_anomaly
from greenstream_assets.rules.reports import DAILY_PEAK_SCHEMA, instant_totals, peak_of_totals, system_peak
from greenstream_assets.rules.validation import validate_readings

from .helpers import DAY, raw_frame, readings_frame, utc

T1 = utc(2024, 6, 3, 8, 0)
T2 = utc(2024, 6, 3, 8, 15)
T3 = utc(2024, 6, 3, 8, 30)


def peak_frame(peak_ts: datetime | None, peak_kw: float | None, meters: int, day: date = DAY) -> pl.DataFrame:
    return pl.DataFrame([(day, peak_ts, peak_kw, meters)], schema=DAILY_PEAK_SCHEMA, orient="row")


# --- anomalies ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "anomaly"),
    [(0.0, False), (99.999, False), (100.0, False), (100.000001, True), (250.0, True), (None, False)],
)
def test_anomaly_boundary(kw: float | None, anomaly: bool) -> None:
    frame = pl.DataFrame({"energy_kw": [kw]}, schema={"energy_kw": pl.Float64})
    assert frame.select(a=is_anomaly(RulesConfig())).get_column("a").to_list() == [anomaly]


@pytest.mark.parametrize(
    ("value", "unit", "anomaly"),
    [
        ("100", "kW", False),
        ("100000", "W", False),
        ("100001", "W", True),
        ("100.5", "kW", True),
        ("", "kW", False),
    ],
)
def test_anomaly_after_unit_conversion(value: str, unit: str, anomaly: bool) -> None:
    validated = validate_readings(
        raw_frame([("m1", "2024-06-03T08:00:00Z", value, unit)]), RulesConfig(), DAY
    )
    flagged, _ = flag_readings(validated.cleansed, RulesConfig())
    assert flagged.get_column("is_anomaly").to_list() == [anomaly]


def test_custom_max() -> None:
    frame = pl.DataFrame({"energy_kw": [5.0, 5.5]})
    assert frame.select(a=is_anomaly(RulesConfig(max_kw=5.0))).get_column("a").to_list() == [False, True]


# --- system peak ---------------------------------------------------------------------------------
# Every case twice: from the whole day's readings (system_peak, as daily_peaks alone reads the
# archive) and from the per-instant totals of slices of meters (as load_meter_readings makes it).


def sliced_peak(readings: pl.DataFrame, day: date) -> pl.DataFrame:
    slices = readings.with_columns(_slice=pl.col("meter_id").rank("dense") % 2).partition_by(
        "_slice", include_key=False
    )
    return peak_of_totals([instant_totals(part) for part in slices or [readings]], day)


PEAK = pytest.mark.parametrize("peak", [system_peak, sliced_peak], ids=["whole", "sliced"])


@PEAK
def test_peak_is_highest_total_instant(peak) -> None:
    readings = readings_frame(
        [
            ("m1", T1, 1.0, False, False),
            ("m2", T1, 2.0, False, False),
            ("m1", T2, 2.5, False, False),
            ("m2", T2, 1.0, False, False),
            ("m1", T3, 0.5, False, False),
        ]
    )
    assert_frame_equal(peak(readings, DAY), peak_frame(T2, 3.5, 2), check_exact=True)


@PEAK
def test_missing_and_anomalies_are_excluded(peak) -> None:
    readings = readings_frame(
        [
            ("m1", T1, 1.0, False, False),
            ("m2", T1, 1.0, False, False),
            ("m3", T1, None, True, False),  # missing: not a meter in the total
            ("m1", T2, 150.0, False, True),  # anomaly: would make T2 the peak
            ("m2", T2, 1.5, False, False),
        ]
    )
    assert_frame_equal(peak(readings, DAY), peak_frame(T1, 2.0, 2), check_exact=True)


@PEAK
def test_meters_reporting_counts_only_meters_in_the_total(peak) -> None:
    readings = readings_frame(
        [
            ("m1", T1, 4.0, False, False),
            ("m2", T1, 5.0, False, False),
            ("m3", T1, None, True, False),
            ("m4", T1, 120.0, False, True),
            ("m3", T2, 1.0, False, False),
        ]
    )
    assert_frame_equal(peak(readings, DAY), peak_frame(T1, 9.0, 2), check_exact=True)


@pytest.mark.parametrize(
    ("rows", "peak_kw", "meters"),
    [
        pytest.param(
            [("m1", T2, 3.0, False, False), ("m1", T1, 1.0, False, False), ("m2", T1, 2.0, False, False)],
            3.0,
            2,
            id="equal_totals",
        ),
        pytest.param(
            [("m1", T1, 0.3, False, False), ("m1", T2, 0.1, False, False), ("m2", T2, 0.2, False, False)],
            0.3,
            1,
            id="float_sum_ties_after_rounding_earlier_single",
        ),
        pytest.param(
            [("m1", T2, 0.3, False, False), ("m1", T1, 0.1, False, False), ("m2", T1, 0.2, False, False)],
            0.3,
            2,
            id="float_sum_ties_after_rounding_earlier_sum",
        ),
    ],
)
@PEAK
def test_tie_takes_earliest_instant(rows: list[tuple], peak_kw: float, meters: int, peak) -> None:
    assert_frame_equal(peak(readings_frame(rows), DAY), peak_frame(T1, peak_kw, meters), check_exact=True)


@PEAK
def test_tie_on_three_instants_in_reverse_order(peak) -> None:
    rows = [("m1", t, 7.0, False, False) for t in (T3, T2, T1)]
    assert_frame_equal(peak(readings_frame(rows), DAY), peak_frame(T1, 7.0, 1), check_exact=True)


@PEAK
def test_peak_kw_rounded_to_six_decimals(peak) -> None:
    readings = readings_frame([("m1", T1, 1.23456789, False, False), ("m2", T1, 1.0000004, False, False)])
    assert_frame_equal(peak(readings, DAY), peak_frame(T1, 2.234568, 2), check_exact=True)


@PEAK
def test_row_order_does_not_change_the_peak(peak) -> None:
    rows = [
        ("m1", T1, 0.1, False, False),
        ("m2", T1, 0.2, False, False),
        ("m3", T1, 0.3, False, False),
        ("m1", T2, 0.6, False, False),
    ]
    forward = peak(readings_frame(rows), DAY)
    backward = peak(readings_frame(list(reversed(rows))), DAY)
    assert_frame_equal(forward, peak_frame(T1, 0.6, 3), check_exact=True)
    assert_frame_equal(backward, forward, check_exact=True)


@pytest.mark.parametrize(
    "rows",
    [
        pytest.param([], id="no_rows"),
        pytest.param([("m1", T1, None, True, False), ("m2", T2, None, True, False)], id="all_missing"),
        pytest.param([("m1", T1, 101.0, False, True)], id="all_anomalies"),
        pytest.param(
            [("m1", T1, None, True, False), ("m1", T2, 500.0, False, True)], id="missing_and_anomaly"
        ),
    ],
)
@PEAK
def test_day_without_eligible_readings(rows: list[tuple], peak) -> None:
    assert_frame_equal(peak(readings_frame(rows), DAY), peak_frame(None, None, 0), check_exact=True)


@PEAK
def test_reading_date_is_the_day_passed(peak) -> None:
    found = peak(readings_frame([("m1", T1, 1.0, False, False)]), date(2024, 6, 4))
    assert_frame_equal(found, peak_frame(T1, 1.0, 1, day=date(2024, 6, 4)), check_exact=True)


@PEAK
def test_zero_total_is_a_peak(peak) -> None:
    readings = readings_frame([("m1", T2, 0.0, False, False), ("m2", T2, 0.0, False, False)])
    assert_frame_equal(peak(readings, DAY), peak_frame(T2, 0.0, 2), check_exact=True)


@PEAK
def test_peak_from_raw_rows(peak) -> None:
    raw = raw_frame(
        [
            ("m1", "2024-06-03T08:00:00Z", "1500", "W"),
            ("m2", "2024-06-03T08:00:00Z", "2.5", "kW"),
            ("m3", "2024-06-03T08:00:00Z", "NaN", "kW"),
            ("m1", "2024-06-03T08:15:00Z", "3", "kW"),
            ("m2", "2024-06-03T08:15:00Z", "200", "kW"),  # anomaly
            ("m1", "2024-06-03T08:30:00Z", "-5", "kW"),  # quarantined
            ("m2", "2024-06-03T09:30:00+01:00", "3.9", "kW"),
        ]
    )
    validated = validate_readings(raw, RulesConfig(), DAY)
    flagged, _ = flag_readings(validated.cleansed, RulesConfig())
    assert_frame_equal(peak(flagged, DAY), peak_frame(T1, 4.0, 2), check_exact=True)
