"""Property tests: validation and flagging never raise and always account for every row."""

from __future__ import annotations

from datetime import date

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from greenstream_assets.rules.config import RulesConfig
from greenstream_assets.rules.duplicates import repeated_values
from greenstream_assets.rules.flagging import flag_readings
from greenstream_assets.rules.validation import CLEANSED_SCHEMA, REASONS, validate_readings

from .helpers import raw_frame

METERS = ["m1", "m2", "m3", " m1 ", "", "  ", None]
TIMESTAMPS = [
    "2024-06-03T08:00:00Z",
    "2024-06-03 08:00:00",
    "2024-06-03T09:00:00+01:00",
    "2024-06-03T10:00:00+0200",
    "2024-06-03T08:15:00Z",
    "2024-06-03T23:45:00",
    "2024-06-04T00:00:00Z",
    "2024-06-02T23:59:00Z",
    "2024-03-31T02:30:00",  # DST gap in Europe/Berlin
    "2024-10-27T02:30:00",  # ambiguous in Europe/Berlin
    "2024-06-03",
    "garbage",
    "",
    None,
]
VALUES = [
    None,
    "",
    " ",
    "NaN",
    "nan",
    "null",
    "N/A",
    "0",
    "-0",
    "0.005",
    "1.5",
    "1.50",
    "1500",
    "100",
    "100000",
    "-1",
    "-1500",
    "1e9",
    "inf",
    "abc",
    " 2 ",
]
UNITS = ["W", "kW", "kw", "", None, "kWh", " kW "]

row = st.tuples(
    st.sampled_from(METERS),
    st.sampled_from(TIMESTAMPS),
    st.one_of(st.sampled_from(VALUES), st.text(max_size=6)),
    st.sampled_from(UNITS),
)
configs = st.sampled_from([RulesConfig(), RulesConfig(timezone="Europe/Berlin")])
days = st.sampled_from([None, date(2024, 6, 3), date(2024, 3, 31), date(2024, 10, 27)])
PROPERTY_SETTINGS = settings(
    database=None, max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(rows=st.lists(row, max_size=40), config=configs, day=days)
def test_validation_invariants(rows, config: RulesConfig, day: date | None) -> None:
    raw = raw_frame(rows)
    result = validate_readings(raw, config, day)
    cleansed, quarantined = result.cleansed, result.quarantined

    # Conservation: every row is kept, quarantined or collapsed, exactly once.
    assert result.rows_in == raw.height
    assert result.collapsed_rows >= 0
    assert raw.height == cleansed.height + quarantined.height + result.collapsed_rows
    kept_lines = cleansed.get_column("line_number").to_list()
    quarantined_lines = quarantined.get_column("line_number").to_list()
    assert len(set(kept_lines) | set(quarantined_lines)) == len(kept_lines) + len(quarantined_lines)

    assert cleansed.schema == pl.Schema(CLEANSED_SCHEMA)
    assert set(quarantined.get_column("reason").to_list()) <= set(REASONS)
    assert quarantined.get_column("reason").null_count() == 0

    # One reading per meter and instant, all with a meter and a timestamp.
    assert cleansed.select("meter_id", "reading_ts").is_duplicated().sum() == 0
    assert cleansed.get_column("meter_id").null_count() == 0
    assert cleansed.get_column("reading_ts").null_count() == 0
    if day is not None:
        assert (cleansed.get_column("reading_ts").dt.date() == day).all()

    # No negatives; missing exactly where there is no value.
    assert cleansed.filter(pl.col("energy_kw") < 0).height == 0
    assert cleansed.get_column("is_missing").to_list() == cleansed.get_column("energy_kw").is_null().to_list()
    assert cleansed.filter(pl.col("energy_kw").is_nan()).height == 0

    # Quarantine keeps the raw text of its rows.
    raw_by_line = {r[-1]: r[:4] for r in raw.select(*raw.columns[:4], "line_number").iter_rows()}
    for q in quarantined.select(
        "meter_id", "timestamp", "energy_value", "energy_unit", "line_number"
    ).iter_rows():
        assert raw_by_line[q[-1]] == q[:4]

    # Flagging never raises on the cleansed output and keeps every row.
    flagged, periods = flag_readings(cleansed, config)
    assert flagged.height == cleansed.height
    assert flagged.filter(pl.col("is_faulty") & pl.col("is_missing")).height == 0
    assert flagged.get_column("is_anomaly").to_list() == [
        kw is not None and kw > config.max_kw for kw in cleansed.get_column("energy_kw").to_list()
    ]
    assert periods.filter(pl.col("end_ts") < pl.col("start_ts")).height == 0


@given(
    st.lists(
        st.integers(min_value=0, max_value=2**64 - 1) | st.integers(min_value=0, max_value=5), max_size=60
    )
)
def test_repeated_values_are_the_values_seen_more_than_once(values: list[int]) -> None:
    # What mark_duplicates and the uniqueness checks build on (numpy's sort, not polars').
    series = pl.Series(values, dtype=pl.UInt64)
    expected = sorted(v for v in set(values) if values.count(v) > 1)
    assert repeated_values(series).tolist() == expected
