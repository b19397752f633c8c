"""Drift check: a day's anomaly or invalid-row rate above 3x its trailing 14-day median."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from greenstream_assets.rules.config import RulesConfig
from greenstream_assets.rules.drift import DAY_STATS_SCHEMA, DRIFT_SCHEMA, drift_findings

CONFIG = RulesConfig()
TODAY = date(2024, 6, 15)
ROWS = 1024  # rates in 1/1024ths are exact in binary floating point


def history(
    counts: list[tuple[int, int]], rows_in: int = ROWS, last: date = TODAY - timedelta(days=1)
) -> pl.DataFrame:
    """(anomalies, invalid_rows) per day, the last on ``last``."""
    n = len(counts)
    rows = [(last - timedelta(days=n - 1 - i), rows_in, a, v) for i, (a, v) in enumerate(counts)]
    return pl.DataFrame(rows, schema=DAY_STATS_SCHEMA, orient="row")


def today(anomalies: int, invalid_rows: int, rows_in: int = ROWS) -> dict[str, object]:
    return {"reading_date": TODAY, "rows_in": rows_in, "anomalies": anomalies, "invalid_rows": invalid_rows}


def findings_frame(rows: list[tuple]) -> pl.DataFrame:
    """(rule, today_rate, trailing_median, threshold, drifted, days_in_window)."""
    return pl.DataFrame(rows, schema=DRIFT_SCHEMA, orient="row")


def drifted(findings: pl.DataFrame) -> dict[str, bool]:
    return dict(findings.select("rule", "drifted").rows())


def test_defaults() -> None:
    assert (CONFIG.drift_factor, CONFIG.drift_window_days, CONFIG.min_drift_rate) == (3.0, 14, 0.0)


# Anomaly counts 4..17 over 14 days: median 10.5/1024; invalid rows 8 every day: median 8/1024.
STEADY = history([(4 + i, 8) for i in range(14)])


def test_drift_fires_and_does_not() -> None:
    found = drift_findings(STEADY, today(32, 24), CONFIG)
    expected = findings_frame(
        [
            ("anomaly_rate", 32 / 1024, 10.5 / 1024, 31.5 / 1024, True, 14),
            ("invalid_rate", 24 / 1024, 8 / 1024, 24 / 1024, False, 14),  # exactly 3x is not above
        ]
    )
    assert_frame_equal(found, expected, check_exact=True)


@pytest.mark.parametrize(
    ("anomalies", "invalid_rows", "expected"),
    [
        pytest.param(31, 24, {"anomaly_rate": False, "invalid_rate": False}, id="just_below_and_at_3x"),
        pytest.param(32, 25, {"anomaly_rate": True, "invalid_rate": True}, id="both_above"),
        pytest.param(10, 8, {"anomaly_rate": False, "invalid_rate": False}, id="normal_day"),
        pytest.param(0, 0, {"anomaly_rate": False, "invalid_rate": False}, id="clean_day"),
        pytest.param(1024, 0, {"anomaly_rate": True, "invalid_rate": False}, id="all_anomalies"),
    ],
)
def test_threshold_is_strictly_above_three_times_the_median(
    anomalies: int, invalid_rows: int, expected: dict[str, bool]
) -> None:
    assert drifted(drift_findings(STEADY, today(anomalies, invalid_rows), CONFIG)) == expected


def test_today_as_dict_or_frame() -> None:
    as_frame = pl.DataFrame([today(32, 24)], schema=DAY_STATS_SCHEMA)
    assert_frame_equal(
        drift_findings(STEADY, as_frame, CONFIG), drift_findings(STEADY, today(32, 24), CONFIG)
    )


def test_rates_are_per_row_received() -> None:
    # Same counts, twice the rows today: half the rate.
    found = drift_findings(STEADY, today(32, 24, rows_in=2048), CONFIG)
    assert found.select("today_rate", "drifted").rows() == [(16 / 1024, False), (12 / 1024, False)]


def test_only_the_14_days_before_today_count() -> None:
    old_storm = history([(500, 500)] * 10, last=TODAY - timedelta(days=15))  # before the window
    today_row = history([(900, 900)], last=TODAY)  # today itself, e.g. from an earlier run
    found = drift_findings(pl.concat([old_storm, STEADY, today_row]), today(32, 24), CONFIG)
    assert found.select("trailing_median", "days_in_window").rows() == [(10.5 / 1024, 14), (8 / 1024, 14)]
    assert drifted(found) == {"anomaly_rate": True, "invalid_rate": False}


def test_fewer_days_of_history_use_what_there_is() -> None:
    found = drift_findings(history([(2, 1), (4, 1), (6, 1)]), today(13, 3), CONFIG)
    assert found.select("trailing_median", "threshold", "drifted", "days_in_window").rows() == [
        (4 / 1024, 12 / 1024, True, 3),
        (1 / 1024, 3 / 1024, False, 3),
    ]


@pytest.mark.parametrize(
    "past",
    [
        pytest.param(history([]), id="no_history"),
        pytest.param(history([(1, 1)], last=TODAY - timedelta(days=20)), id="only_old_history"),
        pytest.param(history([(0, 0)] * 5, rows_in=0), id="only_empty_days"),
    ],
)
def test_without_a_trailing_median_nothing_drifts(past: pl.DataFrame) -> None:
    expected = findings_frame(
        [
            ("anomaly_rate", 1024 / 1024, None, None, False, 0),
            ("invalid_rate", 512 / 1024, None, None, False, 0),
        ]
    )
    assert_frame_equal(drift_findings(past, today(1024, 512), CONFIG), expected, check_exact=True)


@pytest.mark.parametrize(
    ("invalid_rows", "rows_in", "drift"),
    [
        pytest.param(0, 1000, False, id="still_zero"),
        pytest.param(1, 20000, True, id="one_row_exceeds_three_times_zero"),
        pytest.param(5, 1000, True, id="five_rows"),
    ],
)
def test_against_a_zero_median_any_rate_above_zero_drifts(
    invalid_rows: int, rows_in: int, drift: bool
) -> None:
    # 3 x a median of 0 is 0: the rule as written, by default.
    found = drift_findings(STEADY.with_columns(invalid_rows=0), today(10, invalid_rows, rows_in), CONFIG)
    invalid = found.filter(pl.col("rule") == "invalid_rate").row(0, named=True)
    assert (invalid["trailing_median"], invalid["threshold"], invalid["drifted"]) == (0.0, 0.0, drift)


@pytest.mark.parametrize(
    ("invalid_rows", "rows_in", "drift"),
    [
        pytest.param(0, 1000, False, id="still_zero"),
        pytest.param(1, 2000, False, id="below_min_rate"),
        pytest.param(1, 1000, True, id="at_min_rate"),
        pytest.param(5, 1000, True, id="above_min_rate"),
    ],
)
def test_a_configured_minimum_rate_quiets_a_zero_median(invalid_rows: int, rows_in: int, drift: bool) -> None:
    config = RulesConfig(min_drift_rate=0.001)
    found = drift_findings(STEADY.with_columns(invalid_rows=0), today(10, invalid_rows, rows_in), config)
    invalid = found.filter(pl.col("rule") == "invalid_rate").row(0, named=True)
    assert (invalid["trailing_median"], invalid["threshold"], invalid["drifted"]) == (0.0, 0.001, drift)


def test_days_without_rows_are_left_out_of_the_median() -> None:
    # 11 days with rows (anomalies 4..14, median 9/1024) and 3 days without any.
    past = pl.concat(
        [
            history([(4 + i, 8) for i in range(11)], last=TODAY - timedelta(days=4)),
            history([(0, 0)] * 3, rows_in=0),
        ]
    )
    found = drift_findings(past, today(28, 24), CONFIG)
    assert found.select("trailing_median", "days_in_window", "drifted").row(0) == (9 / 1024, 11, True)


def test_today_without_rows_does_not_drift() -> None:
    found = drift_findings(STEADY, today(0, 0, rows_in=0), CONFIG)
    assert found.select("today_rate", "drifted").rows() == [(None, False), (None, False)]


@pytest.mark.parametrize(
    ("factor", "window", "anomalies", "invalid_rows", "expected"),
    [
        # 14 days: medians 10.5 and 8 (per 1024 rows); the last 3 days: 16 and 8.
        (2.0, 14, 22, 17, {"anomaly_rate": True, "invalid_rate": True}),  # 22 > 21, 17 > 16
        (3.0, 14, 22, 25, {"anomaly_rate": False, "invalid_rate": True}),  # 22 < 31.5, 25 > 24
        (3.0, 14, 40, 24, {"anomaly_rate": True, "invalid_rate": False}),  # 40 > 31.5, 24 = 24
        (3.0, 3, 40, 24, {"anomaly_rate": False, "invalid_rate": False}),  # 40 < 48
    ],
)
def test_factor_and_window_from_config(
    factor: float, window: int, anomalies: int, invalid_rows: int, expected: dict[str, bool]
) -> None:
    config = RulesConfig(drift_factor=factor, drift_window_days=window)
    assert drifted(drift_findings(STEADY, today(anomalies, invalid_rows), config)) == expected
