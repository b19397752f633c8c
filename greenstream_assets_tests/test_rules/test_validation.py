"""Rules 1-4 on raw rows: kept, quarantined with the first reason that applies, or collapsed."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from greenstream_assets.rules.config import RulesConfig
from greenstream_assets.rules.validation import (
    CLEANSED_SCHEMA,
    QUARANTINE_COLUMNS,
    REASONS,
    ValidatedDay,
    validate_readings,
)

from .helpers import DAY, SOURCE, cleansed_frame, quarantine_frame, raw_frame, utc

T = "2024-06-03T08:00:00Z"
T_TS = utc(2024, 6, 3, 8)
CONFIG = RulesConfig()


def validate(rows, day: date | None = DAY, config: RulesConfig = CONFIG) -> ValidatedDay:
    result = validate_readings(raw_frame(rows), config, day)
    assert result.rows_in == len(rows)
    assert result.rows_in == result.cleansed.height + result.quarantined.height + result.collapsed_rows
    return result


def reasons(result: ValidatedDay) -> list[str]:
    return result.quarantined.get_column("reason").to_list()


# --- kept rows ----------------------------------------------------------------------------------


def test_valid_rows_are_kept_exactly() -> None:
    result = validate(
        [
            ("m1", "2024-06-03T08:00:00Z", "2.5", "kW"),
            ("m2", "2024-06-03 08:15:00", "1500", "W"),
            ("m1", "2024-06-03T09:30:00+01:00", "0", "kW"),
            ("m3", "2024-06-03T23:45:00", "", "kW"),
        ]
    )
    expected = cleansed_frame(
        [
            ("m1", utc(2024, 6, 3, 8, 0), 2.5, False, SOURCE, 2),
            ("m2", utc(2024, 6, 3, 8, 15), 1.5, False, SOURCE, 3),
            ("m1", utc(2024, 6, 3, 8, 30), 0.0, False, SOURCE, 4),
            ("m3", utc(2024, 6, 3, 23, 45), None, True, SOURCE, 5),
        ]
    )
    assert_frame_equal(result.cleansed, expected)
    assert result.quarantined.height == 0
    assert result.collapsed_rows == 0


def test_output_schemas() -> None:
    result = validate([("m1", T, "1", "kW"), ("m1", "x", "1", "kW")])
    assert result.cleansed.schema == pl.Schema(CLEANSED_SCHEMA)
    assert tuple(result.quarantined.columns) == QUARANTINE_COLUMNS
    assert result.quarantined.schema == pl.Schema(
        {
            "meter_id": pl.String,
            "timestamp": pl.String,
            "energy_value": pl.String,
            "energy_unit": pl.String,
            "reason": pl.String,
            "source_file": pl.String,
            "line_number": pl.Int64,
        }
    )


def test_empty_input() -> None:
    result = validate([])
    assert result.cleansed.height == 0
    assert result.quarantined.height == 0
    assert result.collapsed_rows == 0
    assert result.reason_counts() == dict.fromkeys(REASONS, 0)


# --- rule 2: missing values ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [None, "", "  ", "null", "NULL", "none", "None", "na", "NA", "n/a", "N/A", "nan", "NaN", "NAN", " nan "],
)
@pytest.mark.parametrize("unit", ["kW", "W"])
def test_missing_value_is_kept_as_missing(value: str | None, unit: str) -> None:
    result = validate([("m1", T, value, unit)])
    assert_frame_equal(result.cleansed, cleansed_frame([("m1", T_TS, None, True, SOURCE, 2)]))
    assert result.quarantined.height == 0


@pytest.mark.parametrize("value", ["abc", "1,5", "1.5.5", "12kW", "--1", "one"])
def test_unparseable_value_is_invalid(value: str) -> None:
    result = validate([("m1", T, value, "kW")])
    assert result.cleansed.height == 0
    assert reasons(result) == ["invalid_value"]


# --- rule 4 (lower half): negatives; upper half is only flagged later ---------------------------


@pytest.mark.parametrize(
    ("value", "unit"), [("-1", "kW"), ("-0.001", "kW"), ("-1500", "W"), ("-1", "W"), (" -2 ", " kW ")]
)
def test_negative_value(value: str, unit: str) -> None:
    result = validate([("m1", T, value, unit)])
    assert result.cleansed.height == 0
    assert reasons(result) == ["negative_value"]


@pytest.mark.parametrize(
    ("value", "unit", "kw"), [("100", "kW", 100.0), ("100001", "W", 100.001), ("1e6", "kW", 1e6)]
)
def test_values_above_max_are_kept(value: str, unit: str, kw: float) -> None:
    result = validate([("m1", T, value, unit)])
    assert result.quarantined.height == 0
    assert result.cleansed.get_column("energy_kw").to_list() == [pytest.approx(kw, rel=1e-12)]


# --- rule 3: timestamps -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "timestamp",
    [None, "", "garbage", "2024-06-03", "2024-02-30T00:00:00", "2024-06-03T25:00:00", "03/06/2024 08:00"],
)
def test_invalid_timestamp(timestamp: str | None) -> None:
    result = validate([("m1", timestamp, "1", "kW")])
    assert result.cleansed.height == 0
    assert reasons(result) == ["invalid_timestamp"]


def test_dst_gap_is_invalid_timestamp_in_local_zone() -> None:
    config = RulesConfig(timezone="Europe/Berlin")
    result = validate([("m1", "2024-03-31T02:30:00", "1", "kW")], day=date(2024, 3, 31), config=config)
    assert reasons(result) == ["invalid_timestamp"]


def test_ambiguous_local_time_takes_earlier_instant() -> None:
    config = RulesConfig(timezone="Europe/Berlin")
    result = validate([("m1", "2024-10-27 02:30", "1", "kW")], day=date(2024, 10, 27), config=config)
    assert result.cleansed.get_column("reading_ts").to_list() == [utc(2024, 10, 27, 0, 30)]


@pytest.mark.parametrize(
    ("timestamp", "timezone", "instant"),
    [
        ("2024-06-03T08:00:00Z", "UTC", utc(2024, 6, 3, 8)),
        ("2024-06-03 08:00:00", "UTC", utc(2024, 6, 3, 8)),
        ("2024-06-03T10:00:00+02:00", "UTC", utc(2024, 6, 3, 8)),
        ("2024-06-03T03:00:00-0500", "UTC", utc(2024, 6, 3, 8)),
        ("2024-06-03 10:00:00", "Europe/Berlin", utc(2024, 6, 3, 8)),
        ("2024-06-03T08:00:00Z", "Europe/Berlin", utc(2024, 6, 3, 8)),
        ("2024-06-03T09:00:00+01:00", "Europe/Berlin", utc(2024, 6, 3, 8)),
    ],
)
def test_timestamps_with_and_without_zone(timestamp: str, timezone: str, instant) -> None:
    result = validate([("m1", timestamp, "1", "kW")], config=RulesConfig(timezone=timezone))
    assert result.cleansed.get_column("reading_ts").to_list() == [instant]


@pytest.mark.parametrize(
    ("timestamp", "timezone", "in_day"),
    [
        ("2024-06-03T00:00:00Z", "UTC", True),
        ("2024-06-03T23:59:59Z", "UTC", True),
        ("2024-06-04T00:00:00Z", "UTC", False),
        ("2024-06-02T23:59:59Z", "UTC", False),
        ("2024-06-04T00:30:00+01:00", "UTC", True),  # 2024-06-03 23:30 UTC
        ("2024-06-03T00:30:00+01:00", "UTC", False),  # 2024-06-02 23:30 UTC
        ("2024-06-03 01:00:00", "Europe/Berlin", False),  # 2024-06-02 23:00 UTC
        ("2024-06-04 01:00:00", "Europe/Berlin", True),  # 2024-06-03 23:00 UTC
        ("2023-06-03T08:00:00Z", "UTC", False),
    ],
)
def test_out_of_range_day(timestamp: str, timezone: str, in_day: bool) -> None:
    result = validate([("m1", timestamp, "1", "kW")], config=RulesConfig(timezone=timezone))
    if in_day:
        assert result.cleansed.height == 1
        assert result.quarantined.height == 0
    else:
        assert result.cleansed.height == 0
        assert reasons(result) == ["timestamp_out_of_range"]


def test_day_none_accepts_any_day() -> None:
    result = validate(
        [("m1", "2019-01-01T00:00:00Z", "1", "kW"), ("m1", "2030-12-31T23:00:00Z", "2", "kW")], day=None
    )
    assert result.cleansed.get_column("reading_ts").to_list() == [utc(2019, 1, 1), utc(2030, 12, 31, 23)]
    assert result.quarantined.height == 0


def test_day_none_still_rejects_unparseable() -> None:
    result = validate([("m1", "nope", "1", "kW")], day=None)
    assert reasons(result) == ["invalid_timestamp"]


# --- rule 3: duplicates -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(("1.5", "kW"), ("1.5", "kW"), id="identical"),
        pytest.param(("1.5", "kW"), ("1.50", "kW"), id="trailing_zero"),
        pytest.param(("1000", "W"), ("1e3", "W"), id="exponent"),
        pytest.param(("2", "kW"), (" 2.0 ", "kW"), id="spaces_and_decimal"),
        pytest.param(("1.5", "kW"), ("1.5", " kW "), id="unit_spaces"),
        pytest.param((None, "kW"), ("", "kW"), id="null_vs_empty"),
        pytest.param(("NaN", "kW"), (None, "kW"), id="nan_vs_null"),
        pytest.param(("nan", "W"), ("N/A", "W"), id="nan_vs_na"),
        pytest.param(("0", "kW"), ("-0", "kW"), id="zero_vs_negative_zero"),
        pytest.param(("0", "kW"), ("0.000", "kW"), id="zero_vs_zero_decimals"),
    ],
)
def test_exact_duplicates_collapse_first_kept(first: tuple, second: tuple) -> None:
    result = validate([("m1", T, *first), ("m1", T, *second)])
    assert result.collapsed_rows == 1
    assert result.quarantined.height == 0
    assert result.cleansed.select("meter_id", "reading_ts", "line_number").rows() == [("m1", T_TS, 2)]


def test_nan_vs_null_collapse_to_one_missing_reading() -> None:
    result = validate([("m1", T, "NaN", "kW"), ("m1", T, None, "kW"), ("m1", T, "", "kW")])
    assert result.collapsed_rows == 2
    assert_frame_equal(result.cleansed, cleansed_frame([("m1", T_TS, None, True, SOURCE, 2)]))


def test_duplicate_with_different_timestamp_text_same_instant_collapses() -> None:
    result = validate(
        [
            ("m1", "2024-06-03T08:00:00Z", "1.5", "kW"),
            ("m2", "2024-06-03T08:00:00Z", "3", "kW"),
            ("m1", "2024-06-03T09:00:00+01:00", "1.50", "kW"),
            ("m1", "2024-06-03 08:00", "1.5", "kW"),
        ]
    )
    assert result.collapsed_rows == 2
    assert result.quarantined.height == 0
    assert_frame_equal(
        result.cleansed,
        cleansed_frame([("m1", T_TS, 1.5, False, SOURCE, 2), ("m2", T_TS, 3.0, False, SOURCE, 3)]),
    )


def test_first_by_input_order_is_kept_whatever_the_text() -> None:
    # The later row's raw text sorts first; the earlier line must still win.
    result = validate(
        [("m1", "2024-06-03T09:00:00+01:00", "1.50", "kW"), ("m1", "2024-06-03T08:00:00Z", "1.5", "kW")]
    )
    assert result.collapsed_rows == 1
    assert result.cleansed.get_column("line_number").to_list() == [2]


@pytest.mark.parametrize(
    "values",
    [
        pytest.param([("1500", "W"), ("1.5", "kW")], id="1500W_vs_1.5kW"),
        pytest.param([("1.5", "kW"), ("1.6", "kW")], id="different_value"),
        pytest.param([("1.5", "kW"), ("1.5", "W")], id="different_unit"),
        pytest.param([("1.5", "kW"), ("", "kW")], id="value_vs_missing"),
        pytest.param([("1", "kW"), ("1", "kw")], id="valid_vs_invalid_unit"),
        pytest.param([("1", "kW"), ("abc", "kW")], id="valid_vs_invalid_value"),
        pytest.param([("1", "kW"), ("-1", "kW")], id="valid_vs_negative"),
        pytest.param([("1", "kW"), ("2", "kW"), ("3", "kW")], id="three_values"),
    ],
)
def test_conflicting_duplicates_all_quarantined(values: list[tuple[str, str]]) -> None:
    rows = [("m1", T, v, u) for v, u in values]
    result = validate([*rows, ("m2", T, "1", "kW")])
    assert result.collapsed_rows == 0
    assert_frame_equal(
        result.quarantined,
        quarantine_frame(
            [("m1", T, v, u, "conflicting_duplicate", SOURCE, i + 2) for i, (v, u) in enumerate(values)]
        ),
    )
    # The other meter at the same instant is unaffected.
    assert result.cleansed.select("meter_id", "line_number").rows() == [("m2", len(values) + 2)]


def test_conflict_across_timestamp_forms() -> None:
    result = validate(
        [("m1", "2024-06-03T08:00:00Z", "1", "kW"), ("m1", "2024-06-03T10:00:00+02:00", "2", "kW")]
    )
    assert reasons(result) == ["conflicting_duplicate", "conflicting_duplicate"]
    assert result.cleansed.height == 0


def test_conflict_with_an_exact_repeat_quarantines_every_row_of_the_key() -> None:
    # A, A, B for one meter and instant: two or more different rows, so all of them are invalid,
    # the repeat of A included (nothing collapsed: every row sent is there for review).
    result = validate([("m1", T, "1", "kW"), ("m1", T, "1", "kW"), ("m1", T, "2", "kW")])
    assert result.cleansed.height == 0
    assert result.collapsed_rows == 0
    assert reasons(result) == ["conflicting_duplicate"] * 3
    assert result.quarantined.get_column("line_number").to_list() == [2, 3, 4]


def test_same_meter_different_instants_are_not_duplicates() -> None:
    result = validate([("m1", "2024-06-03T08:00:00Z", "1", "kW"), ("m1", "2024-06-03T08:15:00Z", "1", "kW")])
    assert result.collapsed_rows == 0
    assert result.cleansed.height == 2


def test_duplicate_invalid_timestamps_are_not_collapsed() -> None:
    result = validate([("m1", "bad", "1", "kW"), ("m1", "bad", "1", "kW")])
    assert result.collapsed_rows == 0
    assert reasons(result) == ["invalid_timestamp", "invalid_timestamp"]


# --- reason precedence --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ((None, "garbage", "abc", "kw"), "missing_meter_id"),
        (("", "garbage", "-1", "kw"), "missing_meter_id"),
        (("   ", T, "1", "kW"), "missing_meter_id"),
        (("m1", "garbage", "abc", "kw"), "invalid_timestamp"),
        (("m1", None, "-1", "kW"), "invalid_timestamp"),
        (("m1", "2024-06-04T00:00:00Z", "abc", "kw"), "timestamp_out_of_range"),
        (("m1", "2024-06-02T12:00:00Z", "-1", "kW"), "timestamp_out_of_range"),
        (("m1", T, "abc", "kw"), "invalid_unit"),
        (("m1", T, "-1", "kw"), "invalid_unit"),
        (("m1", T, "", ""), "invalid_unit"),
        (("m1", T, "-1", None), "invalid_unit"),
        (("m1", T, "abc", "kW"), "invalid_value"),
        (("m1", T, "-1", "W"), "negative_value"),
    ],
)
def test_reason_precedence_single_row(row: tuple, reason: str) -> None:
    result = validate([row])
    assert reasons(result) == [reason]


def test_conflicting_beats_unit_value_and_negative() -> None:
    result = validate([("m1", T, "abc", "kw"), ("m1", T, "-1", "kW"), ("m1", T, "xyz", "kW")])
    assert reasons(result) == ["conflicting_duplicate"] * 3


def test_out_of_range_rows_do_not_conflict() -> None:
    other = "2024-06-04T08:00:00Z"
    result = validate([("m1", other, "1", "kW"), ("m1", other, "2", "kW")])
    assert reasons(result) == ["timestamp_out_of_range", "timestamp_out_of_range"]


def test_reason_counts() -> None:
    result = validate(
        [
            (None, T, "1", "kW"),
            ("m1", "bad", "1", "kW"),
            ("m1", "bad2", "1", "kW"),
            ("m1", "2024-06-05T00:00:00Z", "1", "kW"),
            ("m2", T, "1", "kW"),
            ("m2", T, "2", "kW"),
            ("m3", T, "1", "kWh"),
            ("m4", T, "x", "kW"),
            ("m5", T, "-5", "kW"),
            ("m6", T, "5", "kW"),
        ]
    )
    assert result.reason_counts() == {
        "missing_meter_id": 1,
        "invalid_meter_id": 0,
        "invalid_timestamp": 2,
        "timestamp_out_of_range": 1,
        "conflicting_duplicate": 2,
        "invalid_unit": 1,
        "invalid_value": 1,
        "negative_value": 1,
    }


# --- conservation and quarantine contents -------------------------------------------------------


def test_conservation_on_a_mixed_day() -> None:
    rows = [
        ("m1", "2024-06-03T00:00:00Z", "1", "kW"),
        ("m1", "2024-06-03T00:00:00Z", "1.0", "kW"),  # collapsed
        ("m1", "2024-06-03T01:00:00+01:00", "1", "kW"),  # collapsed (same instant)
        ("m2", "2024-06-03T00:00:00Z", "1500", "W"),
        ("m2", "2024-06-03T00:00:00Z", "1.5", "kW"),  # conflicting pair
        ("m3", "2024-06-03T00:15:00Z", "NaN", "kW"),
        ("m3", "2024-06-03T00:15:00Z", None, "kW"),  # collapsed
        ("m4", "2024-06-03T00:15:00Z", "-3", "kW"),
        ("", "2024-06-03T00:15:00Z", "1", "kW"),
        ("m5", "never", "1", "kW"),
        ("m5", "2024-06-03T00:30:00Z", "200", "kW"),
    ]
    result = validate(rows)
    assert result.rows_in == 11
    assert result.collapsed_rows == 3
    assert result.cleansed.height == 3
    assert result.quarantined.height == 5
    assert result.cleansed.select("meter_id", "line_number").rows() == [("m1", 2), ("m3", 7), ("m5", 12)]
    assert result.quarantined.select("line_number", "reason").rows() == [
        (5, "conflicting_duplicate"),
        (6, "conflicting_duplicate"),
        (9, "negative_value"),
        (10, "missing_meter_id"),
        (11, "invalid_timestamp"),
    ]


def test_quarantine_keeps_original_text_and_provenance() -> None:
    raw = pl.concat(
        [
            raw_frame(
                [
                    (" m1 ", " 2024-06-03T08:00:00Z ", " -1.50 ", " kW "),
                    ("  ", "2024-06-03T08:00:00Z", "1", "kW"),
                    (None, None, None, None),
                ],
                source_file="a.csv",
                first_line=2,
            ),
            raw_frame(
                [
                    ("m2", "2024-06-03 08:00", " abc", "kW"),
                    ("m3", "2024-06-03T08:00:00Z", "1", " kw"),
                    ("m4", "2024-06-03T08:00:00Z", "1", "kW"),
                ],
                source_file="b.csv",
                first_line=7,
            ),
        ]
    )
    result = validate_readings(raw, CONFIG, DAY)
    expected = quarantine_frame(
        [
            (" m1 ", " 2024-06-03T08:00:00Z ", " -1.50 ", " kW ", "negative_value", "a.csv", 2),
            ("  ", "2024-06-03T08:00:00Z", "1", "kW", "missing_meter_id", "a.csv", 3),
            (None, None, None, None, "missing_meter_id", "a.csv", 4),
            ("m2", "2024-06-03 08:00", " abc", "kW", "invalid_value", "b.csv", 7),
            ("m3", "2024-06-03T08:00:00Z", "1", " kw", "invalid_unit", "b.csv", 8),
        ]
    )
    assert_frame_equal(result.quarantined, expected)
    assert result.cleansed.select("meter_id", "source_file", "line_number").rows() == [("m4", "b.csv", 9)]


def test_quarantined_conflicts_keep_each_original_row() -> None:
    result = validate(
        [("m1", "2024-06-03T08:00:00Z", "1500", "W"), ("m1", "2024-06-03 09:00+01:00", "1.5", "kW")]
    )
    assert_frame_equal(
        result.quarantined,
        quarantine_frame(
            [
                ("m1", "2024-06-03T08:00:00Z", "1500", "W", "conflicting_duplicate", SOURCE, 2),
                ("m1", "2024-06-03 09:00+01:00", "1.5", "kW", "conflicting_duplicate", SOURCE, 3),
            ]
        ),
    )


@pytest.mark.parametrize(
    ("meter_id", "reason"),
    [
        ("M" * 128, None),
        ("M" * 129, "invalid_meter_id"),
        # The limit counts characters, not bytes: 128 two-byte characters are 256 bytes and fine.
        ("\u00e4" * 128, None),
        ("\u00e4" * 129, "invalid_meter_id"),
        ("  " + "M" * 128 + "  ", None),
        ("nul\x00id", "invalid_meter_id"),
        ("tab\tid", "invalid_meter_id"),
        ("del\x7fid", "invalid_meter_id"),
        ("unit\x1fsep", "invalid_meter_id"),
        ("z\u00e4hler\x1b[0m", "invalid_meter_id"),
        ("\u00a0nbsp-id", None),
        ("x'); DROP TABLE meter_readings;--", None),
        ("zähler-1", None),
    ],
)
def test_meter_ids_too_long_or_with_control_characters_are_invalid(meter_id: str, reason: str | None) -> None:
    result = validate([(meter_id, "2024-06-03T08:00:00Z", "1", "kW")])
    assert reasons(result) == ([reason] if reason else [])
    assert result.cleansed.height == (0 if reason else 1)
