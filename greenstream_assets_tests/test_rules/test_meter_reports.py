"""Per-meter daily reports: peak kW and time, energy in and out of the peak period, load factor, top-N."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from greenstream_assets.rules.config import RulesConfig
from greenstream_assets.rules.enrichment import enrichment_columns
from greenstream_assets.rules.meter_reports import METER_DAILY_REPORT_SCHEMA, meter_daily_report, top_meters
from greenstream_assets.rules.vee import ESTIMATE_SCHEMA, estimate

from .helpers import DAY, readings_frame, series_of, utc

CONFIG = RulesConfig()
Q = timedelta(minutes=15)
T = utc(2024, 6, 3, 16, 30)  # Monday; the default peak period is 17:00-21:00 UTC


def report_row(
    meter_id: str,
    peak_kw: float | None,
    peak_ts: datetime | None,
    energy: tuple[float | None, float | None, float | None],
    average_kw: float | None,
    load_factor: float | None,
    intervals: tuple[int, int],
    peak_includes_estimated: bool = False,
    day: date = DAY,
) -> tuple:
    return (
        day,
        meter_id,
        peak_kw,
        peak_ts,
        *energy,
        average_kw,
        load_factor,
        *intervals,
        peak_includes_estimated,
    )


def report_frame(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=METER_DAILY_REPORT_SCHEMA, orient="row")


def flagged(rows: list[tuple], config: RulesConfig = CONFIG) -> pl.DataFrame:
    return readings_frame(rows).with_columns(enrichment_columns(config))


def test_defaults() -> None:
    assert (CONFIG.top_n_meters, CONFIG.interval_minutes) == (20, 15)


def test_report_for_three_meters() -> None:
    rows = [
        ("m1", T, 2.0, False, False),
        ("m1", T + Q, 4.0, False, False),  # 16:45, off-peak: the peak, earliest of two 4.0
        ("m1", T + 2 * Q, 4.0, False, False),  # 17:00, peak period
        ("m1", T + 3 * Q, 3.0, False, False),
        ("m1", T + 4 * Q, None, True, False),  # missing
        ("m1", T + 5 * Q, 150.0, False, True),  # anomaly: in neither the peak nor the energy
        *series_of("m2", T, 3, None),  # nothing usable
        *series_of("m3", T, 3, 0.0),  # a zero peak: no load factor
    ]
    expected = report_frame(
        [
            report_row("m1", 4.0, T + Q, (3.25, 1.75, 1.5), 3.25, 0.8125, (4, 0)),
            report_row("m2", None, None, (None, None, None), None, None, (0, 0)),
            report_row("m3", 0.0, T, (0.0, 0.0, 0.0), 0.0, None, (3, 0)),
        ]
    )
    assert_frame_equal(meter_daily_report(flagged(rows), CONFIG, DAY), expected, check_exact=True)


@pytest.mark.parametrize(
    ("kws", "energy_kwh", "average_kw"),
    [
        pytest.param([0.1, 0.2, 0.3], 0.15, 0.2, id="float_sum_rounded"),
        pytest.param([1.0, 1.0, 1.0, 1.0], 1.0, 1.0, id="one_kw_for_an_hour"),
        pytest.param([0.004, 0.0, 0.006], 0.0025, 0.003333, id="rounded_to_six_decimals"),
    ],
)
def test_energy_is_kw_times_interval_hours(kws: list[float], energy_kwh: float, average_kw: float) -> None:
    rows = [("m1", T - 4 * Q + i * Q, kw, False, False) for i, kw in enumerate(kws)]  # all off-peak
    report = meter_daily_report(flagged(rows), CONFIG, DAY).row(0, named=True)
    assert (report["energy_kwh"], report["off_peak_kwh"], report["peak_period_kwh"]) == (
        energy_kwh,
        energy_kwh,
        0.0,
    )
    assert report["average_kw"] == average_kw


@pytest.mark.parametrize(("interval_minutes", "energy_kwh"), [(15, 1.5), (30, 3.0), (60, 6.0), (5, 0.5)])
def test_interval_length_from_config(interval_minutes: int, energy_kwh: float) -> None:
    config = RulesConfig(interval_minutes=interval_minutes)
    rows = [("m1", T, 2.0, False, False), ("m1", T + Q, 4.0, False, False)]
    assert meter_daily_report(flagged(rows), config, DAY).get_column("energy_kwh").to_list() == [energy_kwh]


def test_peak_ties_take_the_earliest_instant_whatever_the_row_order() -> None:
    rows = [("m1", T + i * Q, 5.0, False, False) for i in (3, 1, 2)] + [("m1", T, 1.0, False, False)]
    report = meter_daily_report(flagged(rows), CONFIG, DAY)
    assert report.select("peak_kw", "peak_ts").row(0) == (5.0, T + Q)


def test_peak_period_derived_from_config_when_absent() -> None:
    # In Berlin (UTC+2 in June) 15:00-18:59 UTC is the 17:00-21:00 local peak.
    config = RulesConfig(timezone="Europe/Berlin")
    rows = [
        ("m1", utc(2024, 6, 3, 14, 45), 4.0, False, False),
        ("m1", utc(2024, 6, 3, 15, 0), 8.0, False, False),
        ("m1", utc(2024, 6, 3, 18, 45), 4.0, False, False),
        ("m1", utc(2024, 6, 3, 19, 0), 2.0, False, False),
    ]
    report = meter_daily_report(readings_frame(rows), config, DAY).row(0, named=True)
    assert (report["peak_period_kwh"], report["off_peak_kwh"], report["energy_kwh"]) == (3.0, 1.5, 4.5)


def test_weekend_day_has_no_peak_period_energy() -> None:
    saturday = utc(2024, 6, 8, 18, 0)
    rows = [("m1", saturday + i * Q, 2.0, False, False) for i in range(4)]
    report = meter_daily_report(flagged(rows), CONFIG, date(2024, 6, 8)).row(0, named=True)
    assert (report["peak_period_kwh"], report["off_peak_kwh"]) == (0.0, 2.0)
    assert report["reading_date"] == date(2024, 6, 8)


# --- estimated readings (VEE output) -----------------------------------------------------------


def vee_frame(rows: list[tuple]) -> pl.DataFrame:
    """(meter_id, reading_ts, energy_kw, estimated_kw, value_kw, quality_code)."""
    return pl.DataFrame(rows, schema=ESTIMATE_SCHEMA, orient="row")


VEE_ROWS = [
    ("m1", T + 2 * Q, 2.0, None, 2.0, "actual"),  # 17:00
    ("m1", T + 3 * Q, None, 5.0, 5.0, "estimated_linear"),
    ("m1", T + 4 * Q, None, 1.0, 1.0, "estimated_history"),
    ("m1", T + 5 * Q, None, None, None, "missing"),
    ("m1", T + 6 * Q, 200.0, None, 200.0, "anomaly"),
    ("m1", T + 7 * Q, 0.0, None, 0.0, "faulty"),
]


@pytest.mark.parametrize(
    ("include", "peak_kw", "peak_ts", "load_factor"),
    [
        pytest.param(False, 2.0, T + 2 * Q, 1.0, id="actual_only"),
        pytest.param(True, 5.0, T + 3 * Q, 0.4, id="estimated_included"),
    ],
)
def test_estimated_readings_in_energy_and_optionally_in_peak(
    include: bool, peak_kw: float, peak_ts: datetime, load_factor: float
) -> None:
    report = meter_daily_report(vee_frame(VEE_ROWS), CONFIG, DAY, include_estimated_in_peak=include)
    expected = report_frame(
        [report_row("m1", peak_kw, peak_ts, (2.0, 2.0, 0.0), 2.0, load_factor, (4, 2), include)]
    )
    assert_frame_equal(report, expected, check_exact=True)


def test_estimates_above_the_actual_peak_give_a_load_factor_above_one() -> None:
    rows = [
        ("m1", T, 1.0, None, 1.0, "actual"),
        ("m1", T + Q, None, 3.0, 3.0, "estimated_history"),
    ]
    report = meter_daily_report(vee_frame(rows), CONFIG, DAY).row(0, named=True)
    assert (report["peak_kw"], report["average_kw"], report["load_factor"]) == (1.0, 2.0, 2.0)


def test_only_estimates_give_no_peak_unless_included() -> None:
    rows = [("m1", T, None, 3.0, 3.0, "estimated_linear")]
    actual_only = meter_daily_report(vee_frame(rows), CONFIG, DAY).row(0, named=True)
    assert (actual_only["peak_kw"], actual_only["peak_ts"], actual_only["load_factor"]) == (None, None, None)
    assert (actual_only["energy_kwh"], actual_only["estimated_intervals_used"]) == (0.75, 1)
    included = meter_daily_report(vee_frame(rows), CONFIG, DAY, include_estimated_in_peak=True)
    assert included.select("peak_kw", "peak_ts", "load_factor").row(0) == (3.0, T, 1.0)


def test_report_from_vee_estimate() -> None:
    # 00:00-00:45 of 2024-06-03: 2, gap, gap, 5 -> gap interpolated to 3 and 4.
    start = utc(2024, 6, 3)
    rows = [("m1", start, 2.0, False, False), ("m1", start + 3 * Q, 5.0, False, False)]
    estimated = estimate(readings_frame(rows), None, CONFIG, DAY)
    report = meter_daily_report(estimated, CONFIG, DAY).row(0, named=True)
    assert (report["energy_kwh"], report["intervals_used"], report["estimated_intervals_used"]) == (3.5, 4, 2)
    assert (report["peak_kw"], report["peak_ts"]) == (5.0, start + 3 * Q)


def test_empty_readings() -> None:
    assert_frame_equal(meter_daily_report(flagged([]), CONFIG, DAY), report_frame([]))


# --- top meters ---------------------------------------------------------------------------------


def report_with_peaks(peaks: dict[str, float | None]) -> pl.DataFrame:
    rows = [
        report_row(m, kw, None if kw is None else T, (None, None, None), None, None, (0, 0))
        for m, kw in peaks.items()
    ]
    return report_frame(rows)


PEAKS = {"m4": 3.0, "m1": 5.0, "m3": 5.0, "m2": None, "m5": 1.0}


@pytest.mark.parametrize(
    ("n", "meters"),
    [
        (1, ["m1"]),
        (2, ["m1", "m3"]),
        (3, ["m1", "m3", "m4"]),
        (10, ["m1", "m3", "m4", "m5"]),  # the meter without a peak is not ranked
        (0, []),
    ],
)
def test_top_meters_by_peak_then_meter_id(n: int, meters: list[str]) -> None:
    assert top_meters(report_with_peaks(PEAKS), n).get_column("meter_id").to_list() == meters


def test_top_meters_with_default_n() -> None:
    report = report_with_peaks({f"m{i:02d}": float(i) for i in range(25)})
    top = top_meters(report, CONFIG.top_n_meters)
    assert top.get_column("meter_id").to_list() == [f"m{i:02d}" for i in range(24, 4, -1)]
    assert top.schema == report.schema
