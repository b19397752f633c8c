"""Rule 6: a meter file is read whole (text columns, line numbers) or rejected whole with a reason."""

from __future__ import annotations

import pytest
from polars.testing import assert_frame_equal

from greenstream_assets.rules.config import RulesConfig
from greenstream_assets.rules.files import RejectedFile, read_meter_file
from greenstream_assets.rules.validation import validate_readings

from .helpers import RAW_SCHEMA, raw_frame

HEADER = b"meter_id,timestamp,energy_value,energy_unit\n"


def rejected(data: bytes) -> RejectedFile:
    with pytest.raises(RejectedFile) as info:
        read_meter_file(data, "f.csv")
    return info.value


def test_reads_text_columns_and_line_numbers() -> None:
    data = HEADER + b"m1,2024-06-03T08:00:00Z,1.50,kW\nm2,2024-06-03 08:15,007,W\nm3,,,\n"
    expected = raw_frame(
        [
            ("m1", "2024-06-03T08:00:00Z", "1.50", "kW"),
            ("m2", "2024-06-03 08:15", "007", "W"),
            ("m3", None, None, None),
        ],
        source_file="landing/2024-06-03/f.csv",
    )
    assert_frame_equal(read_meter_file(data, "landing/2024-06-03/f.csv"), expected)


def test_schema_is_all_text_plus_provenance() -> None:
    frame = read_meter_file(HEADER + b"1,2,3,4\n", "f.csv")
    assert dict(frame.schema) == RAW_SCHEMA
    assert frame.rows() == [("1", "2", "3", "4", "f.csv", 2)]


@pytest.mark.parametrize(
    "header",
    [
        b"energy_unit,energy_value,timestamp,meter_id",
        b"timestamp,meter_id,energy_unit,energy_value",
        b" Meter_ID , TIMESTAMP ,Energy_Value,  energy_UNIT ",
        b"extra1,energy_unit,EXTRA2,energy_value,timestamp,notes,meter_id",
    ],
)
def test_columns_in_any_order_case_and_spaces_extra_dropped(header: bytes) -> None:
    names = [name.strip().lower().decode() for name in header.split(b",")]
    values = {"meter_id": "m1", "timestamp": "2024-06-03T08:00:00Z", "energy_value": "2", "energy_unit": "kW"}
    line = ",".join(values.get(name, f"x-{name}") for name in names).encode()
    frame = read_meter_file(header + b"\n" + line + b"\n", "f.csv")
    assert_frame_equal(frame, raw_frame([("m1", "2024-06-03T08:00:00Z", "2", "kW")], source_file="f.csv"))


@pytest.mark.parametrize(
    ("header", "missing"),
    [
        (b"timestamp,energy_value,energy_unit", "meter_id"),
        (b"meter_id,energy_value,energy_unit", "timestamp"),
        (b"meter_id,timestamp,energy_unit", "energy_value"),
        (b"meter_id,timestamp,energy_value", "energy_unit"),
        (b"meter_id,timestamp,energy_value,unit", "energy_unit"),
        (b"meter id,timestamp,energy_value,energy_unit", "meter_id"),
        (b"a,b,c,d", "meter_id"),
    ],
)
def test_missing_columns(header: bytes, missing: str) -> None:
    error = rejected(header + b"\n1,2,3,4\n")
    assert error.reason == "missing_columns"
    assert missing in error.detail


def test_missing_columns_lists_all() -> None:
    error = rejected(b"meter_id,timestamp\nm1,t\n")
    assert error.reason == "missing_columns"
    assert "energy_value" in error.detail
    assert "energy_unit" in error.detail


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\n", id="newline"),
        pytest.param(b"  \r\n\n \t", id="whitespace"),
        pytest.param(HEADER, id="header_only"),
        pytest.param(HEADER.rstrip(b"\n"), id="header_only_no_newline"),
        pytest.param(HEADER.replace(b"\n", b"\r\n"), id="header_only_crlf"),
    ],
)
def test_empty_file(data: bytes) -> None:
    assert rejected(data).reason == "empty_file"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x00\x01\x02\x03", id="binary"),
        pytest.param(b"\x89PNG\r\n\x1a\n" + bytes(64), id="png"),
        pytest.param(HEADER + b"\x00" * 40 + b"\xff\xfe", id="nuls_and_bad_utf8"),
    ],
)
def test_not_text(data: bytes) -> None:
    assert rejected(data).reason == "not_text"


def test_a_stray_nul_in_a_text_file_is_a_bad_value_not_a_bad_file() -> None:
    rows = read_meter_file(
        HEADER + b"m1,2024-06-03T08:00:00Z,1\x00,kW\nm2,2024-06-03T08:00:00Z,2,kW\n", "f.csv"
    )
    assert rows.get_column("energy_value").to_list() == ["1\x00", "2"]
    validated = validate_readings(rows, RulesConfig(), None)
    assert validated.quarantined.get_column("reason").to_list() == ["invalid_value"]
    assert validated.cleansed.get_column("meter_id").to_list() == ["m2"]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(HEADER + "m1,2024-06-03T08:00:00Z,1,k\u00e9\n".encode("latin-1"), id="latin1"),
        pytest.param(HEADER + b"m1,2024-06-03T08:00:00Z,\xff\xfe,kW\n", id="invalid_bytes"),
        pytest.param(HEADER + b"m1,2024-06-03T08:00:00Z,1,kW\xe2\x82\n", id="truncated_sequence"),
    ],
)
def test_bad_encoding(data: bytes) -> None:
    assert rejected(data).reason == "bad_encoding"


def test_rejected_file_is_a_value_error_with_reason() -> None:
    error = rejected(b"")
    assert isinstance(error, ValueError)
    assert str(error).startswith("empty_file")


def test_utf8_bom_and_non_ascii_text() -> None:
    data = b"\xef\xbb\xbf" + HEADER + "z\u00e4hler-1,2024-06-03T08:00:00Z,1,kW\n".encode()
    frame = read_meter_file(data, "f.csv")
    assert frame.columns[:4] == ["meter_id", "timestamp", "energy_value", "energy_unit"]
    assert frame.get_column("meter_id").to_list() == ["z\u00e4hler-1"]


def test_crlf_line_endings() -> None:
    data = HEADER.replace(b"\n", b"\r\n") + b"m1,t1,1,kW\r\nm2,t2,2,W\r\n"
    assert_frame_equal(
        read_meter_file(data, "f.csv"),
        raw_frame([("m1", "t1", "1", "kW"), ("m2", "t2", "2", "W")], source_file="f.csv"),
    )


def test_values_are_not_trimmed_or_typed() -> None:
    frame = read_meter_file(HEADER + b" m1 , 2024-06-03T08:00:00Z ,1e3, kW \n", "f.csv")
    assert frame.rows() == [(" m1 ", " 2024-06-03T08:00:00Z ", "1e3", " kW ", "f.csv", 2)]


def test_line_numbers_start_at_two() -> None:
    data = HEADER + b"".join(f"m{i},t,{i},kW\n".encode() for i in range(5))
    assert read_meter_file(data, "f.csv").get_column("line_number").to_list() == [2, 3, 4, 5, 6]
