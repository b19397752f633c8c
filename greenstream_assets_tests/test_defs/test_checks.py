"""The pandera-to-asset-check bridge: counts per failed check, and a sample that names the reading."""

from datetime import UTC, datetime

import dagster as dg
import polars as pl
import pytest

from greenstream_assets.defs.checks import SchemaCheck, schema_check_result
from greenstream_assets.schemas import CleansedReadings, unique_keys


def cleansed(rows):
    return pl.DataFrame(
        rows,
        schema={
            "meter_id": pl.String,
            "reading_ts": pl.Datetime("us", "UTC"),
            "energy_kw": pl.Float64,
            "is_missing": pl.Boolean,
            "source_file": pl.String,
            "line_number": pl.Int64,
        },
        orient="row",
    )


T = datetime(2024, 3, 4, 10, tzinfo=UTC)


def test_a_passing_frame():
    result = schema_check_result(
        "cleansed_schema", dg.AssetKey("x"), CleansedReadings, cleansed([("M1", T, 1.0, False, "a.csv", 2)])
    )
    assert result.passed
    assert (result.metadata["rows_checked"].value, result.metadata["failures"].value) == (1, 0)


def test_failures_are_counted_per_check_and_the_sample_names_the_reading():
    frame = cleansed(
        [
            ("M1", T, 1.0, False, "a.csv", 2),
            ("M2", T, -1.5, False, "a.csv", 3),
            ("M3", T, None, False, "b.csv", 7),
        ]
    )
    result = schema_check_result("cleansed_schema", dg.AssetKey("x"), CleansedReadings, frame)
    assert not result.passed
    assert result.metadata["failures"].value == 2
    assert result.metadata["failures[energy_kw:greater_than_or_equal_to(0)]"].value == 1
    assert result.metadata["failures[CleansedReadings:missing_means_no_value]"].value == 1
    sample = result.metadata["failure_sample"].value
    assert (
        "| column | check | failure_case | index | meter_id | reading_ts | source_file | line_number |"
        in sample
    )
    assert (
        "| energy_kw | greater_than_or_equal_to(0) | -1.5 | 1 | M2 | 2024-03-04 10:00:00+00:00 | a.csv | 3 |"
        in sample
    )


def test_a_check_over_slices_sums_the_counts_and_numbers_rows_from_the_start_of_the_day():
    check = SchemaCheck(CleansedReadings)
    check.add(cleansed([("M1", T, 1.0, False, "a.csv", 2), ("M2", T, -1.5, False, "a.csv", 3)]))
    check.add(cleansed([]))
    check.add(cleansed([("M3", T, -2.0, False, "b.csv", 7), ("M3", T, 1.0, False, "b.csv", 8)]))
    result = check.result("cleansed_schema", dg.AssetKey("x"))
    assert not result.passed
    assert result.metadata["rows_checked"].value == 4
    assert result.metadata["failures[energy_kw:greater_than_or_equal_to(0)]"].value == 2
    # M3 twice at one instant, within its slice (a meter's rows always share one): both rows fail.
    assert result.metadata["failures[CleansedReadings:multiple_fields_uniqueness]"].value == 2
    assert result.metadata["failures"].value == 4
    sample = result.metadata["failure_sample"].value
    assert (
        "| energy_kw | greater_than_or_equal_to(0) | -1.5 | 1 | M2 | 2024-03-04 10:00:00+00:00 | a.csv | 3 |"
        in sample
    )
    assert (
        "| energy_kw | greater_than_or_equal_to(0) | -2.0 | 2 | M3 | 2024-03-04 10:00:00+00:00 | b.csv | 7 |"
        in sample
    )


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        # All distinct: settled by the hashes alone.
        ([("M1", 1), ("M1", 2), ("M2", 1), ("2", "M1")], [True, True, True, True]),
        # Repeated keys, nulls equal to each other: compared exactly.
        (
            [("M1", 1), ("M2", 1), ("M1", 1), (None, 3), (None, 3), ("M1", None)],
            [False, True, False, False, False, True],
        ),
    ],
)
def test_unique_keys_marks_exactly_the_rows_whose_key_repeats(keys, expected):
    frame = pl.LazyFrame(
        {"a": [k[0] for k in keys], "b": [str(k[1]) if k[1] is not None else None for k in keys]}
    )
    marks = unique_keys(frame, ["a", "b"]).collect().to_series()
    assert marks.to_list() == expected
    assert marks.to_list() == (~frame.collect().is_duplicated()).to_list()  # pandera's own rule


def test_slices_are_validated_two_at_a_time_and_keep_their_positions_in_the_day(monkeypatch):
    validated = []
    original = SchemaCheck._validate

    def counted(self, frame, offset):
        validated.append((frame.get_column("meter_id").to_list(), offset))
        return original(self, frame, offset)

    monkeypatch.setattr(SchemaCheck, "_validate", counted)
    check = SchemaCheck(CleansedReadings)
    for k in range(5):
        check.add(cleansed([(f"M{k}", T, -1.0 if k % 2 else 1.0, False, "a.csv", k + 2)]))
    # A slice of other column types is validated on its own, at its own position.
    odd = cleansed([("M5", T, -1.0, False, "a.csv", 7)]).with_columns(pl.col("line_number").cast(pl.Int32))
    check.add(odd)
    result = check.result("cleansed_schema", dg.AssetKey("x"))
    assert validated == [(["M0", "M1"], 0), (["M2", "M3"], 2), (["M4"], 4), (["M5"], 5)]
    assert result.metadata["rows_checked"].value == 6
    assert result.metadata["failures[energy_kw:greater_than_or_equal_to(0)]"].value == 3
    sample = result.metadata["failure_sample"].value
    for position, meter in ((1, "M1"), (3, "M3"), (5, "M5")):
        assert f"| energy_kw | greater_than_or_equal_to(0) | -1.0 | {position} | {meter} |" in sample
